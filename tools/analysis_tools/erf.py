"""Effective receptive fields (ERF) of backbones, drawn side by side as in
the SparX paper's figure, with the share of the input area that holds
20/30/50/99 % of the contribution printed per backbone and stage.

    python tools/analysis_tools/erf.py --backbones sparx-mamba-t swin-t \\
        convnext-t --checkpoints A.pth B.pth none --images IMAGENET/val \\
        --num-images 200 --out erf.png

Per image, the centre of a stage's output map (channels ReLU'd and summed)
is back-propagated to the input; the gradient's magnitude, summed over the
colour channels and averaged over the images, is drawn log10(1 + x) scaled
to a maximum of 1 (RepLKNet's method; the paper used 200 ImageNet images at
224x224, and drew every stage: ``--stages 0 1 2 3``). The area shares are
those of the smallest centred square holding each share of the scaled map.
A backbone is a name (``--list``), a config file, or a registered type with
an optional arch (``SparXMamba:small``). Without ``--images`` the images
are generated scenes of shapes; without a checkpoint the weights are random.
Both are said in the figure and the output.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmsparx.analysis.erf import (THRESHOLDS, ERFInputError,  # noqa: E402
                                  area_fractions, erf_maps, log_normalise)
from mmsparx.analysis.erf_backbones import (build_erf_backbone,  # noqa: E402
                                            display_name, known_names)
from mmsparx.analysis.erf_images import (folder_images,  # noqa: E402
                                         generated_images)
from mmsparx.apis import refusals_exit  # noqa: E402
from mmsparx.visualization.erf import draw_erf  # noqa: E402

PAPER_IMAGES = 200  # the SparX paper's count


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='erf.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backbones', nargs='+', metavar='BACKBONE',
                        help='names, config files or Type[:arch]')
    parser.add_argument('--checkpoints', nargs='+', metavar='FILE',
                        help="one per backbone, 'none' for random weights")
    parser.add_argument('--images', metavar='DIR',
                        help='a folder of images (searched recursively); '
                        'generated images when left out')
    parser.add_argument('--num-images', type=int, default=PAPER_IMAGES,
                        help='images to average over (default: %(default)s, '
                        "the paper's count)")
    parser.add_argument('--size', type=int, default=224,
                        help='input side in pixels (default: %(default)s)')
    parser.add_argument('--stages', type=int, nargs='+', default=[3],
                        help='stages to measure, among 0-3 (default: 3, '
                        'the last)')
    parser.add_argument('--gradient', choices=('abs', 'relu'), default='abs',
                        help="the input gradient's magnitude (abs) or its "
                        "positive part (relu, RepLKNet's script)")
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0,
                        help='image draw and random weights')
    parser.add_argument('--device', default=None,
                        help='default: cuda when available, else cpu')
    parser.add_argument('--out', default='erf.png', help='the PNG to write')
    parser.add_argument('--save-maps', metavar='NPZ',
                        help='also save the raw mean maps (before scaling)')
    parser.add_argument('--list', action='store_true',
                        help='print the known backbone names and exit')
    args = parser.parse_args(argv)
    if not args.list and not args.backbones:
        parser.error('--backbones is required (see --list for names)')
    if args.num_images < 1 or args.size < 32 or args.batch_size < 1:
        parser.error('--num-images and --batch-size must be >= 1 and --size '
                     '>= 32 (the last stage has stride 32)')
    return args


def checkpoints_of(args: argparse.Namespace) -> List[Optional[str]]:
    """One checkpoint (or None) per backbone."""
    if args.checkpoints is None:
        return [None] * len(args.backbones)
    if len(args.checkpoints) != len(args.backbones):
        raise ERFInputError(
            f'{len(args.checkpoints)} checkpoints for '
            f'{len(args.backbones)} backbones: give one per backbone, in '
            "order, 'none' for random weights.")
    return [None if c.lower() == 'none' else c for c in args.checkpoints]


def load_images(args: argparse.Namespace):
    """(pixels 0-255, a phrase saying where they came from)."""
    if args.images is None:
        images = generated_images(args.num_images, args.size, args.seed)
        return images, 'generated (no --images given)'
    images, _ = folder_images(args.images, args.num_images, args.size,
                              args.seed)
    return images, f'from {args.images}'


def _percent(value: float) -> str:
    return f'{100 * value:.2f}%'


def run(args: argparse.Namespace) -> None:
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')  # per-key init
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    checkpoints = checkpoints_of(args)
    images, source = load_images(args)
    count = images.shape[0]
    noun = 'image' if count == 1 else 'images'
    print(f'{count} {noun} {source}, {args.size}x{args.size}, '
          f'{args.gradient} input gradient, on {device}')
    print('area of the input holding each share of the log-scaled ERF:')
    width = max([len(display_name(s)) for s in args.backbones] + [8]) + 2
    print(f'{"backbone":<{width}}{"stage":>6}' +
          ''.join(f'{int(t * 100):>8}%' for t in THRESHOLDS) + '  weights')
    columns, raw = [], {}
    for spec, checkpoint in zip(args.backbones, checkpoints):
        torch.manual_seed(args.seed)
        built = build_erf_backbone(spec, args.stages, checkpoint)
        module = built.module.to(device)
        mean = torch.tensor(built.mean).view(1, 3, 1, 1)
        std = torch.tensor(built.std).view(1, 3, 1, 1)
        inputs = ((images - mean) / std).to(device)
        maps = erf_maps(module, inputs, range(len(built.stages)),
                        args.batch_size, args.gradient)
        column = []
        for stage, erf in zip(built.stages, maps):
            raw[f'{built.name}_stage{stage}'] = erf
            scaled = log_normalise(erf)
            fractions = area_fractions(scaled)
            print(f'{built.name:<{width}}{stage:>6}' + ''.join(
                f'{_percent(fractions[t]):>9}' for t in THRESHOLDS) +
                f'  {built.init}')
            caption = (f'{built.name} stage {stage}\n{built.init}\n'
                       f'50%: {_percent(fractions[0.5])} of the area')
            column.append((scaled, caption))
        columns.append(column)
        del module
    title = (f'Effective receptive field: {count} {noun} {source}, '
             f'{args.size}x{args.size}, log10(1 + x) scaled')
    if all(c is None for c in checkpoints):
        title += '\nrandom init: untrained weights (no --checkpoints given)'
    elif None in checkpoints:
        title += "\nrandom init (untrained) where the checkpoint is 'none'"
    print(f'wrote {draw_erf(columns, title, args.out)}')
    if args.save_maps:
        np.savez(args.save_maps, **raw)
        print(f'wrote {args.save_maps}')


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.list:
        print('\n'.join(known_names()))
        return 0
    try:
        with refusals_exit():
            run(args)
    except (ERFInputError, FileNotFoundError) as err:
        print(f'erf.py: error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == '__main__':
    sys.exit(main())
