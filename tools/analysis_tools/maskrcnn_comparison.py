"""Mask R-CNN on the generated shapes set with each backbone of
configs/demo/README.md: same data, FPN, heads, schedule and CPU budget, only
the backbone (or the recipe) differs. Trains what has no result yet through
tools/misc/demo.py (2 processes), then prints the table and draws every run's
curves.png, and comparison.png (RoI classification loss and bbox mAP of
every run).

    python tools/analysis_tools/maskrcnn_comparison.py            # all runs
    python tools/analysis_tools/maskrcnn_comparison.py --only r18 sparx_small
    python tools/analysis_tools/maskrcnn_comparison.py --table    # print only
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

# name -> (config, what differs). Order is the table's.
RUNS: Dict[str, tuple] = {
    'r18': ('configs/demo/maskrcnn_r18_fpn_shapes.py', 'ResNet-18, AdamW'),
    'swin_small': ('configs/demo/maskrcnn_swin_small_fpn_shapes.py',
                   "Swin 1-1-3-1 / 48 (mmdet's, LN outputs), AdamW"),
    'spartan_xt': ('configs/demo/maskrcnn_spartan_xt_fpn_shapes.py',
                   'SpaRTAN-XT, GN outputs, AdamW'),
    'sparx_small_ln': ('configs/demo/maskrcnn_sparx_small_ln_fpn_shapes.py',
                       "small SparX-Mamba, authors' per-pixel LN outputs, "
                       'AdamW'),
    'sparx_small': ('configs/demo/maskrcnn_sparx_small_fpn_shapes.py',
                    'small SparX-Mamba, GN outputs, '
                    "dmca_scale='input', AdamW"),
    'sparx_small_learned': (
        'configs/demo/maskrcnn_sparx_small_learned_fpn_shapes.py',
        "small SparX-Mamba, GN outputs, dmca_scale='learned', AdamW"),
    'sparx_small_sgd': ('configs/demo/maskrcnn_sparx_small_sgd_fpn_shapes.py',
                        'small SparX-Mamba, GN outputs, '
                        "dmca_scale='input', SGD"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.
                                     RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', choices=list(RUNS),
                        help='these runs only (default: all)')
    parser.add_argument('--work-root', default='work_dirs/maskrcnn_compare')
    parser.add_argument('--data-root', default='data/demo_coco')
    parser.add_argument('--rerun', action='store_true',
                        help='train again even where a result exists')
    parser.add_argument('--table', action='store_true',
                        help='print the table of the runs done; train none')
    return parser.parse_args()


def backbone_params(config: str) -> float:
    """Millions of backbone parameters, as built from the config."""
    import mmsparx  # noqa: F401  (registers the backbones)
    from mmsparx.apis import load_model
    model = load_model(osp.join(ROOT, config))[0]
    return sum(p.numel() for p in model.backbone.parameters()) / 1e6


def run(name: str, args: argparse.Namespace) -> None:
    config = RUNS[name][0]
    command = [sys.executable, osp.join(ROOT, 'tools', 'misc', 'demo.py'),
               '--config', config, '--data-root', args.data_root,
               '--work-dir', osp.join(args.work_root, name)]
    print('[compare] ' + ' '.join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def summary(name: str, work_root: str) -> Optional[dict]:
    path = osp.join(ROOT, work_root, name, 'demo_summary.json')
    if not osp.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def table(names: List[str], work_root: str) -> str:
    lines = ['| run | backbone, recipe | backbone params (M) | bbox mAP | '
             'bbox AP50 | segm mAP | segm AP50 | training (s) |',
             '|---|---|---|---|---|---|---|---|']
    for name in names:
        found = summary(name, work_root)
        if found is None:
            continue
        m = found['metrics']
        lines.append(
            f'| {name} | {RUNS[name][1]} | '
            f'{backbone_params(RUNS[name][0]):.2f} | '
            f'{m.get("coco/bbox_mAP", float("nan")):.3f} | '
            f'{m.get("coco/bbox_mAP_50", float("nan")):.3f} | '
            f'{m.get("coco/segm_mAP", float("nan")):.3f} | '
            f'{m.get("coco/segm_mAP_50", float("nan")):.3f} | '
            f'{found["train_s"]} |')
    return '\n'.join(lines)


def draw_comparison(names: List[str], work_root: str, out_file: str) -> None:
    """The RoI classification loss per iteration and bbox mAP per epoch of
    every run, one line each: where a backbone does not learn, it shows."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from mmsparx.visualization.curves import read_curves, scalars_file
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        if summary(name, work_root) is None:
            continue
        curves = read_curves(scalars_file(osp.join(ROOT, work_root, name)))
        if curves.get('loss_cls'):
            left.plot(*zip(*curves['loss_cls']), label=name)
        if curves.get('coco/bbox_mAP'):
            right.plot(*zip(*curves['coco/bbox_mAP']), marker='o',
                       label=name)
    left.set(xlabel='iteration', ylabel='loss_cls (RoI head)',
             title='RoI classification loss')
    right.set(xlabel='epoch', ylabel='bbox mAP (val)', title='bbox mAP',
              ylim=(0, None))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)
    names = args.only or list(RUNS)
    if not args.table:
        for name in names:
            if args.rerun or summary(name, args.work_root) is None:
                run(name, args)
    print(table(names, args.work_root))
    picture = osp.join(ROOT, args.work_root, 'comparison.png')
    draw_comparison(names, args.work_root, picture)
    print(f'[compare] every run\'s curves.png under {args.work_root}/NAME/, '
          f'all runs in {picture}')


if __name__ == '__main__':
    main()
