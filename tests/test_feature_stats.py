"""tools/analysis_tools/feature_stats.py: the neighbour correlation it
reports."""
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))

from feature_stats import neighbour_correlation  # noqa: E402


def test_neighbour_correlation_tells_smooth_from_noise():
    torch.manual_seed(0)
    noise = torch.randn(2, 8, 32, 32)
    assert abs(neighbour_correlation(noise)) < 0.05
    ramp = torch.linspace(0, 1, 32).expand(2, 8, 32, 32)
    assert neighbour_correlation(ramp) > 0.99
    # A constant per channel is removed: only spatial variation counts.
    assert abs(neighbour_correlation(noise + 5.0) -
               neighbour_correlation(noise)) < 1e-5
