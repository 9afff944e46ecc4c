"""SparX-Mamba-T as a plain PyTorch module: one feature map per stage.

    python demo/backbone_features.py

prints the shape of each stage's output for a 1x3x224x224 input (strides
4, 8, 16, 32; the widths of the 'tiny' variant). Runs on a CPU.
"""
import os.path as osp
import sys
from typing import List, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmsparx.models import SparXMamba  # noqa: E402


def main() -> List[Tuple[int, ...]]:
    """Print and return the shape of each stage's output."""
    torch.manual_seed(0)
    backbone = SparXMamba('tiny', out_indices=(0, 1, 2, 3)).eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = backbone(images)
    shapes = [tuple(feature.shape) for feature in features]
    for stage, shape in zip(backbone.out_indices, shapes):
        stride = images.shape[-1] // shape[-1]
        print(f'stage {stage}: {shape} (stride {stride})')
    return shapes


if __name__ == '__main__':
    main()
