"""Functions swapped while a model is traced for ONNX, each for a reason the
check found (as mmdeploy's rewriters do, scoped to the export):

* ``F.adaptive_avg_pool1d / 2d``: torch's exporter refuses an output size
  that does not divide the input (UperNet's pyramid pooling at scales 3
  and 6 on a 16x16 map) and any input whose size shape inference lost
  (a dynamic batch through a reshape: DMCA's channel pooling, SpaRTAN's
  global pooling). Here they are products with constant averaging
  matrices: the same bins, computed for the traced (fixed) size.
* mmpretrain's ``ShiftWindowMSA.window_reverse`` computes the batch as a
  Python ``int`` from the window count, which tracing bakes in: a graph
  traced at batch 1 then silently mixes the images of a larger batch
  (the view's last ``-1`` absorbs them). The rewrite lets the batch axis
  stay free.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def pooling_matrix(size_in: int, size_out: int) -> Tensor:
    """(size_out, size_in): row i averages adaptive pooling's bin
    [floor(i * in / out), ceil((i + 1) * in / out))."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _sizes(output_size: Union[int, Sequence], inputs: Sequence[int]):
    # Traced sizes arrive as 0-d tensors.
    if isinstance(output_size, (int, Tensor)):
        output_size = (output_size, ) * len(inputs)
    return [int(s) if s is not None else int(i)
            for s, i in zip(output_size, inputs)]


def adaptive_avg_pool1d(x: Tensor, output_size) -> Tensor:
    """``F.adaptive_avg_pool1d`` as ``x @ P^T`` for the traced length."""
    (out, ) = _sizes(output_size, [int(x.shape[-1])])
    matrix = pooling_matrix(int(x.shape[-1]), out).to(x)
    return torch.matmul(x, matrix.t())


def adaptive_avg_pool2d(x: Tensor, output_size) -> Tensor:
    """``F.adaptive_avg_pool2d`` as ``P_h @ x @ P_w^T`` (a mean for 1x1)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w = _sizes(output_size, [height, width])
    if (out_h, out_w) == (1, 1):
        return x.mean(dim=(-2, -1), keepdim=True)
    rows = pooling_matrix(height, out_h).to(x)
    cols = pooling_matrix(width, out_w).to(x)
    return torch.matmul(torch.matmul(rows, x), cols.t())


def window_reverse(windows: Tensor, H: int, W: int,
                   window_size: int) -> Tensor:
    """mmpretrain's ``ShiftWindowMSA.window_reverse`` with a free batch."""
    x = windows.view(-1, H // window_size, W // window_size, window_size,
                     window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, windows.shape[-1])


@contextlib.contextmanager
def export_rewrites() -> Iterator[None]:
    """Apply the rewrites above; everything is restored on exit."""
    saved = [(F, 'adaptive_avg_pool1d', F.adaptive_avg_pool1d),
             (F, 'adaptive_avg_pool2d', F.adaptive_avg_pool2d)]
    F.adaptive_avg_pool1d = adaptive_avg_pool1d
    F.adaptive_avg_pool2d = adaptive_avg_pool2d
    try:
        from mmpretrain.models.utils import ShiftWindowMSA
    except ImportError:
        ShiftWindowMSA = None
    if ShiftWindowMSA is not None:
        saved.append((ShiftWindowMSA, 'window_reverse',
                      ShiftWindowMSA.__dict__['window_reverse']))
        ShiftWindowMSA.window_reverse = staticmethod(window_reverse)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
