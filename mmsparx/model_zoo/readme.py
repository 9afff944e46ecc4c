"""The results tables of the family READMEs, generated from the metafiles
(``tools/analysis_tools/model_zoo.py --update`` counts, writes both): a README
whose table differs from its metafile is stale."""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Optional

from mmsparx.model_zoo.metafiles import metafile_paths, read_metafile

BEGIN = ('<!-- model-zoo table: generated from metafile.yml by '
         'tools/analysis_tools/model_zoo.py --update; do not edit -->')
END = '<!-- end of model-zoo table -->'


def _millions(value: Optional[int]) -> str:
    return '-' if value is None else f'{value / 1e6:.1f}'


def _giga(value: Optional[int]) -> str:
    if value is None:
        return '-'
    digits = 2 if value < 10e9 else 1 if value < 100e9 else 0
    return f'{value / 1e9:.{digits}f}'


def _schedule(meta: dict) -> str:
    if 'Epochs' in meta:
        return f'{meta["Epochs"]} ep'
    return f'{meta["Iterations"] // 1000}k it'


def _metrics(entry: dict) -> Dict[str, float]:
    out = {}
    for result in entry.get('Results', []):
        out.update(result['Metrics'])
    return out


def render(entries: List[dict]) -> str:
    """One table per training set: the config, what mmsparx counts, what
    the paper gives."""
    lines: List[str] = []
    datasets = list(dict.fromkeys(e['Metadata']['Training Data']
                                  for e in entries))
    for data in datasets:
        group = [e for e in entries if e['Metadata']['Training Data'] == data]
        metrics = list(dict.fromkeys(m for e in group for m in _metrics(e)))
        lines += [f'**{data}**', '',
                  '| config | backbone | schedule | params (M) | FLOPs (G) '
                  '| input | paper params (M) | paper FLOPs (G) | ' +
                  ' | '.join(f'paper {m}' for m in metrics) + ' |',
                  '|---' * (8 + len(metrics)) + '|']
        for e in group:
            meta = e['Metadata']
            name = osp.basename(e['Config'])
            link = osp.relpath(e['Config'], osp.dirname(e['README']))
            size = meta.get('Input Size')
            values = _metrics(e)
            lines.append(' | '.join([
                f'| [{name[:-3]}]({link})', meta['Architecture'][0],
                _schedule(meta), _millions(meta.get('Parameters')),
                _giga(meta.get('FLOPs')),
                f'{size[0]}x{size[1]}' if size else '-',
                _millions(meta.get('Paper Parameters')),
                _giga(meta.get('Paper FLOPs'))] +
                [str(values.get(m, '-')) for m in metrics]) + ' |')
        lines.append('')
    return '\n'.join(lines).rstrip('\n')


def readme_tables(root: str) -> Dict[str, str]:
    """README path (relative to ``root``) -> its generated table."""
    grouped: Dict[str, List[dict]] = {}
    for path in metafile_paths(root):
        for entry in read_metafile(root, path)['Models']:
            grouped.setdefault(entry['README'], []).append(entry)
    return {readme: render(entries) for readme, entries in grouped.items()}


def spliced(root: str, tables: Dict[str, str], begin: str = BEGIN,
            end: str = END, what: str = 'model-zoo table') -> Dict[str, str]:
    """README path -> its text with ``tables[path]`` between its ``begin``
    and ``end`` markers, for the READMEs where that differs from the file:
    what every generated README table is written or checked with."""
    out = {}
    for readme, table in tables.items():
        with open(osp.join(root, readme)) as f:
            text = f.read()
        if begin not in text or end not in text:
            raise ValueError(f'{readme} has no {what} markers ({begin!r} '
                             f'... {end!r}): add them where the table goes')
        head, rest = text.split(begin, 1)
        new = f'{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}'
        if new != text:
            out[readme] = new
    return out


def write_texts(root: str, texts: Dict[str, str]) -> List[str]:
    """Write each path's new text; the paths written."""
    for readme, text in texts.items():
        with open(osp.join(root, readme), 'w') as f:
            f.write(text)
    return list(texts)


def stale_readmes(root: str) -> List[str]:
    """READMEs whose table is not what their metafile renders to."""
    return list(spliced(root, readme_tables(root)))


def update_readmes(root: str) -> List[str]:
    """Rewrite each README's table from its metafile; the changed ones."""
    return write_texts(root, spliced(root, readme_tables(root)))
