"""Every Triton kernel compiles for a Hopper GPU (sm_90), on any machine.

The interpreter runs kernels as Python and skips the compiler's front end:
a kernel reading a plain global passed every interpreted test and failed to
compile on the first real GPU. Compiling to a cubin needs no GPU (Triton
ships ptxas), so CI catches that class of error.
"""
import inspect
import os

import pytest

triton = pytest.importorskip('triton')
if os.environ.get('TRITON_INTERPRET') == '1':
    pytest.skip('the interpreter replaces the compiler in this process',
                allow_module_level=True)

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from mmsparx.ops import triton_cross_kernels as kernels  # noqa: E402
from mmsparx.ops import triton_scan as generic  # noqa: E402

TARGET = GPUTarget('cuda', 90, 32)
HALF_INPUTS = {'x_ptr': '*bf16', 'low_ptr': '*bf16', 'bc_ptr': '*bf16'}


def compile_kernel(kernel, constexprs, pointer_types=None):
    """Compile ``kernel`` with every non-constexpr argument typed: pointers
    (``*_ptr`` and the summary outputs) float32 unless named, ints i32."""
    pointer_types = pointer_types or {}
    signature = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constexprs:
            signature[name] = 'constexpr'
        elif name.endswith('_ptr') or name in ('p_out', 's_out'):
            signature[name] = pointer_types.get(name, '*fp32')
        else:
            signature[name] = 'i32'
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=TARGET)
    assert compiled.asm['cubin'], kernel.fn.__name__


FLAGS = dict(N=1, BD=16, T=64, HAS_BIAS=True, SOFTPLUS=True)


@pytest.mark.parametrize('direction', range(4))
@pytest.mark.parametrize('adjoint', [False, True])
@pytest.mark.parametrize('cols_t', [True, False])
def test_chunk_summaries(direction, adjoint, cols_t):
    compile_kernel(kernels.chunk_summary,
                   dict(FLAGS, DIR=direction, ADJOINT=adjoint, COLS_T=cols_t),
                   HALF_INPUTS)


@pytest.mark.parametrize('reverse', [False, True])
def test_carry(reverse):
    compile_kernel(kernels.carry, dict(BD=128, REVERSE=reverse))


@pytest.mark.parametrize('kernel', ['output', 'grads'])
@pytest.mark.parametrize('direction,variant', [
    (0, dict(HAS_D=True, HAS_ENTRY=True, COLS_T=True)),
    (3, dict(HAS_D=True, HAS_ENTRY=False, COLS_T=True)),
    (3, dict(HAS_D=True, HAS_ENTRY=True, COLS_T=False)),
    (1, dict(N=2, BD=8, T=32, HAS_BIAS=False, HAS_D=False, HAS_ENTRY=True,
             SOFTPLUS=False, COLS_T=True))])
def test_output_and_gradients(kernel, direction, variant):
    extra = dict(SEQ=False, NP=variant.get('N', 1)) if kernel == 'output' \
        else {}
    compile_kernel(getattr(kernels, kernel),
                   dict(FLAGS, DIR=direction, **variant, **extra),
                   HALF_INPUTS)


@pytest.mark.parametrize('direction,variant', [
    (1, dict(N=1, HAS_ENTRY=True)), (2, dict(N=3, HAS_ENTRY=False))])
def test_sequential_output(direction, variant):
    compile_kernel(kernels.output,
                   dict(FLAGS, DIR=direction, HAS_D=True, COLS_T=True,
                        SEQ=True, NP=4 if variant['N'] == 3 else 1,
                        **variant), HALF_INPUTS)


@pytest.mark.parametrize('kernel', ['_scan_fwd_kernel', '_scan_bwd_kernel'])
def test_generic_scan(kernel):
    compile_kernel(getattr(generic, kernel), dict(BLOCK_D=16, T=64))
