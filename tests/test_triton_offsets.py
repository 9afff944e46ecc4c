"""The Triton kernels' offsets stay exact past 2^31 elements.

At SparX-T's first stage on 800x1344 images (4d = 768 rows of L = 67,200
tokens) a batch of 42 per GPU puts the last row's offsets past 2^31; in
32 bits they wrap negative and the kernels read and write out of bounds.
Tensors that large do not fit here, so small probe kernels compute the
offsets through the very helpers the scan kernels use, for the programs
of such a batch, and store them as int64 for comparison with Python's
integers. Without the 64-bit program ids these tests fail (the stored
offsets are negative). They run where the kernels run: on a GPU, or here
under ``TRITON_INTERPRET=1`` (test_triton_interpreter.py).
"""
import os

import pytest
import torch

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
pytestmark = pytest.mark.skipif(
    DEVICE == 'cpu' and not INTERPRETED,
    reason='no CUDA: test_triton_interpreter.py runs these interpreted')

triton = pytest.importorskip('triton')
import triton.language as tl  # noqa: E402

from mmsparx.ops.triton_cross_kernels import (image_index,  # noqa: E402
                                              map_offsets, raw_step_offsets)
from mmsparx.ops.triton_scan import program_rows, row_offsets  # noqa: E402

BATCH, ROWS_PER_IMAGE, LENGTH = 43, 768, 67_200  # images 0..42
D = ROWS_PER_IMAGE // 4  # the cross scan's channels per direction
BLOCK, T = 16, 64


@triton.jit
def _where(BD: tl.constexpr, T: tl.constexpr):
    """This program's (BD, T) block of the int64 output."""
    return (tl.program_id(0) * BD + tl.arange(0, BD))[:, None] * T + \
        tl.arange(0, T)[None, :]


@triton.jit
def _scan_probe(out_ptr, dim, length, BLOCK_D: tl.constexpr,
                T: tl.constexpr):
    _, _, rows = program_rows(dim, BLOCK_D)
    offs = length - T + tl.arange(0, T)  # the rows' last chunk
    tl.store(out_ptr + _where(BLOCK_D, T), row_offsets(rows, length, offs))


@triton.jit
def _cross_probe(map_ptr, raw_ptr, d, L, BD: tl.constexpr, T: tl.constexpr):
    image = image_index()
    chan = tl.arange(0, BD)
    p = L - T + tl.arange(0, T)
    tl.store(map_ptr + _where(BD, T), map_offsets(image, d, chan, L, p))
    tl.store(raw_ptr + _where(BD, T),
             raw_step_offsets(image, 3, d, chan, L, p))


def probe_scan_offsets() -> torch.Tensor:
    out = torch.zeros(BATCH, BLOCK, T, dtype=torch.int64, device=DEVICE)
    _scan_probe[(BATCH, 1)](out, ROWS_PER_IMAGE, LENGTH, BLOCK_D=BLOCK, T=T)
    return out


def probe_cross_offsets():
    maps = torch.zeros(BATCH, BLOCK, T, dtype=torch.int64, device=DEVICE)
    raws = torch.zeros_like(maps)
    _cross_probe[(BATCH, )](maps, raws, D, LENGTH, BD=BLOCK, T=T)
    return maps, raws


def expected(rows_of_image: int, first_row) -> torch.Tensor:
    """Python's offsets: (image, channel, step) of the last chunk."""
    image = torch.arange(BATCH, dtype=torch.int64)[:, None, None]
    chan = torch.arange(BLOCK, dtype=torch.int64)[None, :, None]
    step = torch.arange(LENGTH - T, LENGTH, dtype=torch.int64)[None, None]
    return (image * rows_of_image + first_row + chan) * LENGTH + step


def test_generic_scan_offsets_pass_2_31():
    got = probe_scan_offsets().cpu()
    want = expected(ROWS_PER_IMAGE, 0)
    assert int(want.max()) > 2 ** 31  # the probe reaches past 32 bits
    assert torch.equal(got, want)


def test_cross_scan_offsets_pass_2_31():
    maps, raws = (t.cpu() for t in probe_cross_offsets())
    assert torch.equal(maps, expected(D, 0))
    # Direction 3 of (b, 4, d, L): rows b * 4d + 3d + channel.
    want = expected(4 * D, 3 * D)
    assert int(want.max()) > 2 ** 31
    assert torch.equal(raws, want)
