"""What a detector's backbone hands its neck at initialisation, on the
generated shapes images: per output, the std, the spatial share of the
variance and the correlation of each pixel with its right-hand neighbour
(low = noise-like), before and after the backbone's output norm.

    python tools/analysis_tools/feature_stats.py configs/demo/maskrcnn_r18_fpn_shapes.py \\
        configs/demo/maskrcnn_sparx_small_ln_fpn_shapes.py

The Mask R-CNN diagnosis of configs/demo/README.md: the authors' per-pixel
LayerNorm turns the small SparX's stride-4 features (neighbour correlation
0.65) into noise (0.39; 0.62 with the whole-map GroupNorm); ResNet-18's are
at 0.83.
"""
import argparse
import glob
import os.path as osp
import sys
from typing import List

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def neighbour_correlation(feature: torch.Tensor) -> float:
    """Correlation of each pixel with the one to its right, per map."""
    f = feature - feature.mean(dim=(2, 3), keepdim=True)
    a, b = f[..., 1:], f[..., :-1]
    return ((a * b).sum() / (a.square().sum() * b.square().sum()).sqrt()
            ).item()


def load_images(root: str, count: int) -> torch.Tensor:
    import mmcv
    paths = sorted(glob.glob(osp.join(root, 'train', '*.jpg')))[:count]
    if not paths:
        raise SystemExit(f'no images under {root}/train: generate them with '
                         f'python -m mmsparx.datasets coco {root}')
    mean = np.array([123.675, 116.28, 103.53])
    std = np.array([58.395, 57.12, 57.375])
    images = [(mmcv.imread(p, channel_order='rgb') - mean) / std
              for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def report(config: str, images: torch.Tensor) -> List[str]:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmsparx  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    torch.manual_seed(0)
    backbone = MODELS.build(Config.fromfile(config).model.backbone)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('ERROR')  # per-key init lines
    backbone.init_weights()
    backbone.train()
    before = {}
    norms = getattr(backbone, 'out_norms', None)
    hooks = [] if norms is None else [
        norm.register_forward_pre_hook(
            lambda m, args, key=key: before.__setitem__(key, args[0]))
        for key, norm in norms.items()]
    with torch.no_grad():
        outs = backbone(images)
    for hook in hooks:
        hook.remove()
    lines = [osp.basename(config)]
    keys = sorted(before, key=int)
    for index, out in enumerate(outs):
        spatial = out.var(dim=(2, 3)).mean().sqrt().item() / out.std().item()
        line = (f'  out {index} {tuple(out.shape[1:])}: std '
                f'{out.std().item():.3f}, spatial share {spatial:.2f}, '
                f'neighbour corr {neighbour_correlation(out):.2f}')
        if index < len(keys):
            line += (' (before the output norm '
                     f'{neighbour_correlation(before[keys[index]]):.2f})')
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--data-root', default='data/demo_coco')
    parser.add_argument('--images', type=int, default=4)
    args = parser.parse_args()
    images = load_images(args.data_root, args.images)
    for config in args.configs:
        print('\n'.join(report(config, images)))


if __name__ == '__main__':
    main()
