"""``tools/train.py --amp`` on a machine without a GPU: bfloat16 autocast.

mmengine's ``AmpOptimWrapper`` asserts a GPU (or NPU/MLU/MUSA) when it is
built: its loss scaler is ``torch.cuda.amp.GradScaler``. CPU autocast runs
bfloat16 only, and bfloat16 keeps float32's exponent range, so gradients
need no loss scaling: the plain ``OptimWrapper`` step under a bfloat16
autocast context is the whole of mixed precision there, once mmcv's CPU
ops that have float32/float64 kernels only (NMS, RoIAlign: mmdet's RPN and
RoI heads) take float32 inputs under it.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

CPU_WRAPPER = 'CpuBf16OptimWrapper'
# mmcv autograd Functions whose CPU kernels dispatch float32/float64 only:
# ``expected scalar type Float but found BFloat16`` under bf16 autocast.
FLOAT32_MMCV_OPS = (('mmcv.ops.nms', 'NMSop'),
                    ('mmcv.ops.roi_align', 'RoIAlignFunction'))
# AmpOptimWrapper's own arguments, meaningless without its GradScaler.
_AMP_ONLY = ('loss_scale', 'dtype', 'use_fsdp')


@OPTIM_WRAPPERS.register_module(name=CPU_WRAPPER)
class CpuBf16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward and loss run under CPU bfloat16
    autocast (parameters, gradients and the optimizer stay float32)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        float32_mmcv_ops()

    @contextmanager
    def optim_context(self, model: torch.nn.Module) -> Iterator[None]:
        with super().optim_context(model), \
                torch.autocast('cpu', dtype=torch.bfloat16):
            yield


def _cast(value, dtype: torch.dtype):
    """``value`` with its bfloat16 tensors (in tuples/lists too) as
    ``dtype``."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16,
                                                           torch.float32):
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _in_float32(fn, outputs_back: bool):
    """``fn(ctx, *args)`` run in float32 when given bfloat16 tensors, with
    autocast off; floating outputs cast back to bfloat16 when
    ``outputs_back`` (the forward: callers index-put them into bfloat16
    buffers). Other calls pass through unchanged."""
    def wrapped(ctx, *args):
        if not any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16
                   for a in args):
            return fn(ctx, *args)
        with torch.autocast('cpu', enabled=False):
            out = fn(ctx, *_cast(args, torch.float32))
        if not outputs_back:
            return out
        single = isinstance(out, torch.Tensor)
        out = tuple(o.to(torch.bfloat16) if isinstance(o, torch.Tensor)
                    and o.is_floating_point() else o
                    for o in ((out,) if single else out))
        return out[0] if single else out
    return wrapped


def float32_mmcv_ops() -> None:
    """Run :data:`FLOAT32_MMCV_OPS` in float32 when autocast hands them
    bfloat16 (as autocast runs its own float32-only ops). Idempotent;
    skipped without mmcv."""
    import importlib
    for module_name, name in FLOAT32_MMCV_OPS:
        try:
            function = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            continue
        if getattr(function, '_mmsparx_float32', False):
            continue
        function.forward = staticmethod(_in_float32(function.forward, True))
        if 'backward' in function.__dict__:
            function.backward = staticmethod(
                _in_float32(function.backward, False))
        function._mmsparx_float32 = True


def enable_amp(cfg: Config, cuda: Optional[bool] = None) -> List[str]:
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine:
    mmengine's ``AmpOptimWrapper`` (float16, dynamic loss scale) with CUDA,
    :class:`CpuBf16OptimWrapper` without. Returns the change made on the
    CPU, to be logged.

    Raises:
        ValueError: the config's wrapper is neither of mmengine's two
            (another wrapper's autocast is its own business).
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper not in ('OptimWrapper', 'AmpOptimWrapper', CPU_WRAPPER):
        raise ValueError(
            f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper, '
            f'not {wrapper}: drop --amp, or set --cfg-options '
            f'optim_wrapper.type=OptimWrapper.')
    if cuda:
        if wrapper != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        return []
    dropped = [key for key in _AMP_ONLY if key in cfg.optim_wrapper]
    for key in dropped:
        cfg.optim_wrapper.pop(key)
    cfg.optim_wrapper.type = CPU_WRAPPER
    note = f' ({", ".join(dropped)} dropped)' if dropped else ''
    return [f'--amp: optim_wrapper.type: {wrapper} -> {CPU_WRAPPER}, '
            f'bfloat16 autocast on the CPU{note}: mmengine\'s '
            f'AmpOptimWrapper needs a GPU, and bfloat16 needs no loss '
            f'scaling.']
