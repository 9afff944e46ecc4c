"""Whole-model parameters and FLOPs of the configs, next to the papers'.

    python tools/analysis_tools/model_zoo.py [CONFIG ...] [--input H W] [--json]
    python tools/analysis_tools/model_zoo.py --update      # metafiles + READMEs

Default: every config the metafiles list (``model-index.yml``). Counted as
the papers count (``mmsparx.model_zoo.complexity``): 800x1280 for COCO
detectors, 512x2048 for ADE20K segmentors, the test crop for classifiers;
one multiply-add = one FLOP; DMCA's attention products left out unless
``--with-attention``. The paper's figures come from the metafiles.
``--json`` prints only a JSON list of {config, params, flops, input,
paper_params, paper_flops}. ``--update`` writes the counts into the
metafiles (``Parameters``, ``FLOPs``, ``Input Size``) and regenerates the
family READMEs' tables from them.
"""
import argparse
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmsparx.utils.cli import json_stdout  # noqa: E402
from mmsparx.model_zoo.complexity import count_config, relative  # noqa: E402
from mmsparx.model_zoo.metafiles import (entries_by_config,  # noqa: E402
                                         metafile_paths, paper_figures,
                                         read_metafile, write_metafile)
from mmsparx.model_zoo.readme import update_readmes  # noqa: E402


def _percent(ours, paper) -> str:
    if paper is None or ours is None:
        return '     -'
    return f'{100 * (ours - paper) / paper:+5.1f}%'


def print_table(rows) -> None:
    print(f'{"config":<62}{"params":>13}{"FLOPs":>18}  {"input":<10}'
          f'{"paper params":>13}{"":>7}{"paper FLOPs":>17}')
    for row in rows:
        flops = '-' if row['flops'] is None else f'{row["flops"]:,}'
        size = 'x'.join(str(v) for v in row['input'])
        pp = '-' if row['paper_params'] is None else \
            f'{row["paper_params"] / 1e6:.1f} M'
        pf = '-' if row['paper_flops'] is None else \
            f'{row["paper_flops"] / 1e9:.1f} G'
        print(f'{row["config"]:<62}{row["params"]:>13,}{flops:>18}  '
              f'{size:<10}{pp:>13} {_percent(row["params"], row["paper_params"])}'
              f'{pf:>11} {_percent(row["flops"], row["paper_flops"])}')


def update(rows) -> None:
    """Counts into the metafiles, then the READMEs' tables from them."""
    counted = {row['config']: row for row in rows}
    for path in metafile_paths(ROOT):
        content = read_metafile(ROOT, path)
        for entry in content['Models']:
            row = counted.get(entry['Config'])
            if row is not None:
                entry['Metadata'].update({
                    'Parameters': row['params'], 'FLOPs': row['flops'],
                    'Input Size': row['input']})
        write_metafile(ROOT, path, content)
    for readme in update_readmes(ROOT):
        print(f'updated {readme}', file=sys.stderr)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('configs', nargs='*',
                        help='config files (default: all in the metafiles)')
    parser.add_argument('--input', type=int, nargs=2, metavar=('H', 'W'),
                        help="count at this size instead of the paper's")
    parser.add_argument('--with-attention', action='store_true',
                        help='also count the DMCA attention products')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--update', action='store_true',
                        help='write the counts into the metafiles and '
                        'regenerate the README tables')
    args = parser.parse_args(argv)
    entries = entries_by_config(ROOT)
    configs = [relative(c, ROOT) for c in args.configs] or list(entries)
    missing = [c for c in configs if not osp.isfile(osp.join(ROOT, c))]
    if missing:
        parser.error(f'no such config file: {", ".join(missing)}')
    if args.update and (args.input or args.with_attention):
        parser.error("--update records the papers' convention: drop "
                     '--input / --with-attention')
    rows = []
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        for config in configs:
            counted = count_config(osp.join(ROOT, config), args.input,
                                   args.with_attention)
            paper = paper_figures(entries[config]) if config in entries \
                else dict(paper_params=None, paper_flops=None)
            if args.input:  # the paper's figures are at its own size
                paper['paper_flops'] = None
            rows.append(dict(config=config, **counted, **paper))
    if args.json:
        print(json.dumps(rows))
        return
    print_table(rows)
    if args.update:
        update(rows)


if __name__ == '__main__':
    main()
