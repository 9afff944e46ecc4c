"""The published checkpoints, listed once: every metafile model with a
``Weights:`` address (the authors' release file) names, in ``Converted
Weights:``, the mmsparx file it becomes, and in ``Weights Results:`` its
own metrics where they are not the paper's (``Results``). The download
tool fetches and converts them from here, and each family README's
weights table is generated from the same entries."""
from __future__ import annotations

import os
import os.path as osp
import urllib.parse
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from mmsparx.apis.conversion import convert_sparx_mamba_file
from mmsparx.converters.detect import FAMILIES
from mmsparx.fileio import CheckpointError, local_copy
from mmsparx.fileio.download import FETCH_COMMAND
from mmsparx.model_zoo.metafiles import metafile_paths, read_metafile
from mmsparx.model_zoo.readme import spliced, write_texts

URL_BASE_ENV = 'MMSPARX_WEIGHTS_URL_BASE'
OUT_DIR = 'checkpoints'
BEGIN = ('<!-- weights table: generated from metafile.yml by '
         'tools/model_converters/download.py --update-readme; do not '
         'edit -->')
END = '<!-- end of weights table -->'


@dataclass(frozen=True)
class PublishedFile:
    """One published checkpoint and what the metafile says of it."""
    model: str  # the metafile Name: its config's file name
    config: str  # relative to the repository root
    readme: str
    url: str
    converted: str  # the mmsparx file's name
    architecture: tuple  # ('SparX-Mamba-T', 'FPN', 'Mask R-CNN')
    data: str  # training set
    schedule: str  # '12 ep', '160k it'
    paper: Mapping[str, float]  # the paper's metrics
    own: Mapping[str, float]  # the file's, where they differ; else empty

    @property
    def file(self) -> str:
        """The release file's name (the last part of its URL)."""
        return urllib.parse.unquote(
            osp.basename(urllib.parse.urlparse(self.url).path))

    @property
    def arch(self) -> str:
        """'tiny' / 'small' / 'base': the variant the file must hold."""
        family, letter = self.architecture[0].rsplit('-', 1)
        names = {v: k for k, v in FAMILIES[family].letters.items()}
        return names[letter]

    def source(self, url_base: Optional[str] = None) -> str:
        """Where to fetch it: its URL, or the same name under
        ``url_base`` (else ``$MMSPARX_WEIGHTS_URL_BASE``) for a mirror."""
        base = url_base or os.environ.get(URL_BASE_ENV)
        if not base:
            return self.url
        return f'{base.rstrip("/")}/{urllib.parse.quote(self.file)}'


def _metrics(results: Optional[list]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for result in results or []:
        out.update(result['Metrics'])
    return out


def _schedule(meta: dict) -> str:
    if 'Epochs' in meta:
        return f'{meta["Epochs"]} ep'
    return f'{meta["Iterations"] // 1000}k it'


def published_files(root: str) -> List[PublishedFile]:
    """Every metafile model with published weights, in metafile order."""
    found = []
    for path in metafile_paths(root):
        for entry in read_metafile(root, path)['Models']:
            if 'Weights' not in entry:
                continue
            meta = entry['Metadata']
            found.append(PublishedFile(
                model=entry['Name'], config=entry['Config'],
                readme=entry['README'], url=entry['Weights'],
                converted=entry['Converted Weights'],
                architecture=tuple(meta['Architecture']),
                data=meta['Training Data'], schedule=_schedule(meta),
                paper=_metrics(entry.get('Results')),
                own=_metrics(entry.get('Weights Results'))))
    return found


def find_published(root: str, name: str) -> PublishedFile:
    """The published file ``name`` stands for: its release file name, its
    model (config) name or its converted file's name.

    Raises:
        KeyError: no such file; the message lists the names there are.
    """
    files = published_files(root)
    bare = osp.basename(name)
    for item in files:
        if bare in (item.file, item.model, item.converted,
                    osp.splitext(item.file)[0]):
            return item
    raise KeyError(
        f'{name!r} is not a published file. Give one of: '
        f'{", ".join(item.file for item in files)} (or the model name '
        'of its config, e.g. ' + (files[0].model if files else '-') + ').')


def fetch_and_convert(item: PublishedFile, dst: str,
                      url_base: Optional[str] = None) -> dict:
    """Fetch ``item`` (once: the cache keeps it), convert it into ``dst``
    after a strict load of the model read off its shapes; a summary with
    the cached copy's path (``cached``), the model's ``arch`` and key
    count.

    Raises:
        CheckpointError: the download failed (a ``DownloadError``), or the
            file is not the variant it is published as, or does not
            convert.
    """
    if not item.architecture[0].startswith('SparX-Mamba-'):
        raise CheckpointError(f'{item.file}: no converter for '
                              f'{item.architecture[0]} files.')
    cached = local_copy(item.source(url_base))
    summary = convert_sparx_mamba_file(cached, dst, expected_arch=item.arch)
    return dict(summary, cached=cached)


# -- the README's weights table -----------------------------------------------
def _values(metrics: Mapping[str, float]) -> str:
    return ', '.join(f'{name} {value}' for name, value in metrics.items())


def render(items: List[PublishedFile], readme: str) -> str:
    """The weights table of one README: each file's address, its model,
    the paper's result and the command that fetches and converts it."""
    lines = ['| file | config | model | paper result | fetch and convert |',
             '|---|---|---|---|---|']
    for item in items:
        link = osp.relpath(item.config, osp.dirname(readme))
        result = _values(item.paper)
        if item.own:
            result += f'; this file: {_values(item.own)}'
        lines.append(
            f'| [{item.file}]({item.url}) | [{item.model}]({link}) '
            f'| {item.architecture[0]}, {" + ".join(item.architecture[1:])}'
            f', {item.data} {item.schedule} | {result} '
            f'| `{FETCH_COMMAND} {item.file}` → '
            f'`{OUT_DIR}/{item.converted}` |')
    return '\n'.join(lines)


def _weights_tables(root: str) -> Dict[str, str]:
    """README path -> its weights table as the metafiles render it."""
    grouped: Dict[str, List[PublishedFile]] = {}
    for item in published_files(root):
        grouped.setdefault(item.readme, []).append(item)
    return {readme: render(items, readme)
            for readme, items in grouped.items()}


def _regenerated(root: str) -> Dict[str, str]:
    """README path -> its text with its weights table as the metafiles
    render it, for the READMEs where that differs from the file."""
    return spliced(root, _weights_tables(root), BEGIN, END, 'weights table')


def stale_weights_tables(root: str) -> List[str]:
    """READMEs whose weights table is not what the metafiles say."""
    return list(_regenerated(root))


def update_weights_tables(root: str) -> List[str]:
    """Rewrite each README's weights table; the changed READMEs."""
    return write_texts(root, _regenerated(root))
