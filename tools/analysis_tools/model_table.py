"""Params and FLOPs of registered variants, classification head included.

    python tools/analysis_tools/model_table.py sparx-mamba-t sparx-mamba-s --input 224 224 [--json]

FLOPs follow the papers' convention: one multiply-add is one FLOP (mmengine's
jit counter, fvcore-style), the model in eval mode, the selective scan
priced 9*B*L*D*N + B*D*L through mmsparx's op handle, element-wise ops
free, and DMCA's two attention products (Q K^T, A V) not counted
(``--with-attention`` adds them). ``--train-mode`` counts with the model
in train mode instead (BatchNorm priced 5 ops per element, not 1), the
convention of SpaRTAN's paper figures; the header says which mode was used.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmsparx.utils.cli import json_stdout  # noqa: E402
from mmsparx.model_zoo.complexity import papers_flops  # noqa: E402
from mmsparx.models.variants import (VARIANTS, build_classifier,  # noqa
                                     model_names)


def count(name: str, height: int, width: int,
          with_attention: bool = False, train_mode: bool = False) -> dict:
    model = build_classifier(name).train(train_mode)
    params = sum(p.numel() for p in model.parameters())
    image = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        flops = papers_flops(model, (image, None, 'tensor'), with_attention)
    return dict(name=name, params=params, flops=flops,
                input=[height, width],
                mode='train' if train_mode else 'eval')


def _classes_note(name: str) -> str:
    classes = VARIANTS[name].get('num_classes', 1000)
    return '' if classes == 1000 else f' ({classes}-class head)'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('names', nargs='*', default=sorted(VARIANTS),
                        help=f'variants (default all: {sorted(VARIANTS)}) '
                        'or baselines (e.g. resnet-18)')
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--with-attention', action='store_true',
                        help='also count the DMCA attention products')
    parser.add_argument('--train-mode', action='store_true',
                        help='count in train mode (BatchNorm as in '
                        'training; the SpaRTAN paper\'s convention)')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in model_names()]
    if unknown:
        parser.error(f'unknown variant(s) {unknown}; known: '
                     f'{model_names()}')
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        rows = [count(n, *args.input, args.with_attention, args.train_mode)
                for n in args.names]
    if args.json:
        print(json.dumps(rows))
        return
    mode = 'train' if args.train_mode else 'eval'
    print(f'{"model":<16}{"params":>14}{"FLOPs":>18}  input '
          f'({mode} mode, 1 multiply-add = 1 FLOP)')
    for row in rows:
        if row['name'] not in VARIANTS:  # a baseline: no paper figures
            print(f'{row["name"]:<16}{row["params"]:>14,}'
                  f'{row["flops"]:>18,}  {row["input"][0]}x{row["input"][1]}')
            continue
        paper = VARIANTS[row['name']]
        # The paper's figure at this input size where it gives one.
        size = tuple(row['input'])
        paper_flops = paper.get('paper_flops_at', {}).get(size)
        if paper_flops is None:
            paper_flops, size = paper.get('paper_flops'), (224, 224)
        flops = ('FLOPs not given' if paper_flops is None else
                 f'{paper_flops / 1e9:.2f} G @{size[0]}' +
                 ('' if size[0] == size[1] else f'x{size[1]}'))
        print(f'{row["name"]:<16}{row["params"]:>14,}{row["flops"]:>18,}  '
              f'{row["input"][0]}x{row["input"][1]}   paper: '
              f'{paper["paper_params"] / 1e6:.2f} M, {flops}'
              f'{_classes_note(row["name"])}')


if __name__ == '__main__':
    main()
