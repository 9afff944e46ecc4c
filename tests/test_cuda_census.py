"""The fake-CUDA census: SparX's CUDA code path (autocast, the Triton ops'
fake implementations, the scan's kernel choice) runs without a GPU, and
the tally counts kernels and bytes as they are."""
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmsparx.analysis.cuda_census import category, census
from mmsparx.models.layers import SS2D

pytest.importorskip('triton')


def test_counts_kernels_and_their_bytes_not_views():
    result = census(torch.nn.Identity(),
                    lambda: torch.randn(4, 8, device='cuda'),
                    lambda m, x: (x.t() * 2).sum(0), train=False)
    # The transpose launches nothing; the product reads 128 and writes 128
    # bytes, the sum reads 128 and writes 16 (the input's randn is counted
    # before the tally starts).
    assert dict(result.kernels) == {'aten.mul.Tensor': 1,
                                    'aten.sum.dim_IntList': 1}
    assert result.bytes['aten.mul.Tensor'] == 4 * 8 * 4 * 2
    assert result.bytes['aten.sum.dim_IntList'] == 4 * 8 * 4 + 4 * 4
    assert category(torch.ops.aten.mul.Tensor) == 'element-wise'
    assert category(torch.ops.aten._to_copy.default) == 'casts/copies'


def test_autocast_runs_on_the_fake_device():
    result = census(torch.nn.Linear(8, 4),
                    lambda: torch.randn(2, 8, device='cuda'),
                    lambda m, x: m(x), train=False,
                    amp_dtype=torch.float16)
    assert result.kernels['aten._to_copy.default'] == 3  # x, weight, bias
    assert not torch.is_autocast_enabled('cuda')  # restored afterwards


@pytest.mark.parametrize('sms,op', [(10000, 'mmsparx.cross_scan_fwd.default'),
                                    (1, 'mmsparx.scan_fwd.default')])
def test_ss2d_takes_the_scan_its_gpu_would(sms, op):
    # Inference: the fused cross scan unless the batch alone fills the GPU
    # (GENERIC_PROGRAMS_PER_SM), then the generic Triton scan.
    result = census(SS2D(16), lambda: torch.randn(4, 16, 12, 12,
                                                  device='cuda'),
                    lambda m, x: m(x), train=False,
                    amp_dtype=torch.float16, sms=sms)
    assert result.kernels[op] == 1
    assert result.by_category['scan']['kernels'] == 1


def test_ss2d_scan_output_goes_to_the_norm_in_float32():
    # Under CUDA autocast the scan's float32 sum goes into the (float32)
    # group norm as it is, and the norm writes float16 for out_proj: no
    # cast of a (b, 2C, H, W) map either way.
    casts = []

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            # Seen before the tally decomposes them: to.dtype and the like.
            if func.overloadpacket.__name__ in ('to', '_to_copy') and \
                    out.dtype != args[0].dtype:
                casts.append(tuple(args[0].shape))
            return out

    def forward(m, x):
        with Casts():
            return m(x)

    census(SS2D(16), lambda: torch.randn(2, 16, 12, 12, device='cuda'),
           forward, train=False, amp_dtype=torch.float16, sms=10000)
    assert casts and (2, 32, 12, 12) not in casts
    assert (2, 16, 12, 12) in casts  # the input, for in_proj's product


def test_tool_prints_json_rows(capfd):
    # benchmark.py's main in this process: its stdout is the JSON alone.
    from tools.analysis_tools.benchmark import main
    capfd.readouterr()
    status = main(['census', 'sparx-mamba-t', '--batch', '1', '--input',
                   '64', '64', '--json'])
    out, err = capfd.readouterr()
    assert status == 0, err[-2000:]
    row, = json.loads(out)
    assert row['name'] == 'sparx-mamba-t' and row['kernels'] > 100
    assert row['categories']['scan']['kernels'] == 13  # SparX-T's SS2Ds
    assert row['gib'] == pytest.approx(
        sum(c['gib'] for c in row['categories'].values()), abs=0.01)
