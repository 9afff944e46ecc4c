"""What a model's CUDA code path launches, counted on any machine.

The model runs on fake CUDA tensors (``FakeTensorMode``: shapes, dtypes
and devices, no data, no GPU needed) under CUDA autocast, with the
Triton ops standing in by their fake implementations, and a dispatch mode
tallies every kernel-level operator with the bytes it reads and writes.
Composite operators are counted as the ones they decompose into; views and
allocations launch nothing and count as none.

The tally is a proxy, not a timing: kernel launches and bytes moved are
what the element-wise, copy and cast kernels around the scan cost on a GPU
(about half of SparX-T's inference time on an H200, ``gpu.md``), so a
change that drops them can be shown here before a GPU times it.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Operators by what they do to memory; anything else is 'other'.
_CASTS = {'_to_copy', 'copy', 'clone', 'cat', 'stack', 'flip', 'index',
          'index_select', 'gather', 'constant_pad_nd', 'roll'}
_PRODUCTS = {'mm', 'bmm', 'addmm', 'baddbmm', 'convolution',
             '_convolution', 'cudnn_convolution', 'convolution_backward',
             '_scaled_dot_product_efficient_attention',
             '_scaled_dot_product_flash_attention',
             '_efficient_attention_backward', '_flash_attention_backward',
             '_scaled_dot_product_efficient_attention_backward',
             '_scaled_dot_product_flash_attention_backward'}
_NORMS = {'native_group_norm', 'native_group_norm_backward',
          'native_layer_norm', 'native_layer_norm_backward',
          'native_batch_norm', 'native_batch_norm_backward',
          'cudnn_batch_norm', 'cudnn_batch_norm_backward',
          '_native_batch_norm_legit', '_native_batch_norm_legit_no_training',
          '_native_batch_norm_legit_functional', 'var_mean'}
_REDUCTIONS = {'sum', 'mean', 'amax', 'max', 'min', 'var', 'norm',
               'linalg_vector_norm', '_softmax', '_softmax_backward_data',
               '_log_softmax', '_log_softmax_backward_data',
               'nll_loss_forward', 'nll_loss_backward'}
# Allocation and metadata: no kernel runs.
_FREE = {'empty', 'empty_strided', 'new_empty', 'new_empty_strided',
         'empty_like', 'detach', 'alias', 'lift_fresh', 'lift_fresh_copy',
         '_local_scalar_dense', 'sym_size', 'sym_stride', 'sym_numel',
         'sym_storage_offset', 'is_same_size', 'size', 'stride', 'dim',
         'is_contiguous', '_has_compatible_shallow_copy_type', 'set_'}
CATEGORIES = ('scan', 'products', 'norms', 'casts/copies', 'element-wise',
              'reductions', 'other')


def category(op: torch._ops.OpOverload) -> str:
    """The row of :data:`CATEGORIES` an operator counts in."""
    if op.namespace == 'mmsparx':
        return 'scan'
    name = op.overloadpacket.__name__
    if name.endswith('_') and not name.startswith('_'):
        name = name[:-1]  # in place: the same kernel
    if name in _CASTS:
        return 'casts/copies'
    if name in _PRODUCTS:
        return 'products'
    if name in _NORMS:
        return 'norms'
    if name in _REDUCTIONS:
        return 'reductions'
    if torch.Tag.pointwise in op.tags:
        return 'element-wise'
    return 'other'


def _nbytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches in ``t``: its elements, at most its storage
    (an expanded weight is read once)."""
    size = t.numel() * t.element_size()
    try:
        return min(size, t.untyped_storage().nbytes())
    except (NotImplementedError, RuntimeError):
        return size


def _is_view(op: torch._ops.OpOverload) -> bool:
    returns = op._schema.returns
    return bool(returns) and all(
        r.alias_info is not None and not r.alias_info.is_write
        for r in returns)


@dataclass
class Census:
    """Kernels and bytes (read + written) per operator and per category."""
    kernels: collections.Counter = field(default_factory=collections.Counter)
    bytes: collections.Counter = field(default_factory=collections.Counter)
    by_category: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def add(self, op: torch._ops.OpOverload, nbytes: int) -> None:
        name = str(op)
        self.kernels[name] += 1
        self.bytes[name] += nbytes
        row = self.by_category.setdefault(category(op),
                                          dict(kernels=0, gib=0.0))
        row['kernels'] += 1
        row['gib'] += nbytes / 2**30

    @property
    def total_kernels(self) -> int:
        return sum(self.kernels.values())

    @property
    def total_gib(self) -> float:
        return sum(self.bytes.values()) / 2**30

    def summary(self, top: int = 8) -> dict:
        """JSON-ready: totals, categories, the ``top`` operators by bytes."""
        return dict(
            kernels=self.total_kernels, gib=round(self.total_gib, 3),
            categories={k: dict(kernels=v['kernels'], gib=round(v['gib'], 3))
                        for k, v in sorted(self.by_category.items(),
                                           key=lambda kv: -kv[1]['gib'])},
            top_ops=[dict(op=k, kernels=self.kernels[k],
                          gib=round(v / 2**30, 3))
                     for k, v in self.bytes.most_common(top)])


class _Tally(TorchDispatchMode):
    """Counts the kernel-level operators that reach it."""

    def __init__(self, census: Census) -> None:
        super().__init__()
        self.census = census

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.OpOverload) and \
                func.namespace == 'aten':
            with self:  # the decomposition's operators are counted
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if not isinstance(func, torch._ops.OpOverload) or \
                func.namespace not in ('aten', 'mmsparx') or \
                func.overloadpacket.__name__ in _FREE or _is_view(func):
            return out
        touched = {}
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor):
                touched.setdefault(id(t), _nbytes(t))
        self.census.add(func, sum(touched.values()))
        return out


class _Props:
    """What ``torch.cuda.get_device_properties`` answers without a GPU."""

    def __init__(self, sms: int) -> None:
        self.multi_processor_count = sms
        self.name = f'fake GPU, {sms} SMs'


@contextlib.contextmanager
def fake_cuda(sms: int = 132,
              amp_dtype: Optional[torch.dtype] = None) -> Iterator[None]:
    """Fake tensors on a CUDA device with ``sms`` multiprocessors (an H200
    has 132) and, with ``amp_dtype``, CUDA autocast: ``torch.autocast``
    refuses CUDA where none is present, so it is switched on underneath."""
    props = torch.cuda.get_device_properties
    was = torch.is_autocast_enabled('cuda'), torch.get_autocast_dtype('cuda')
    torch.cuda.get_device_properties = lambda *a, **k: _Props(sms)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            if amp_dtype is not None:
                torch.set_autocast_enabled('cuda', True)
                torch.set_autocast_dtype('cuda', amp_dtype)
                torch.autocast_increment_nesting()
            try:
                yield
            finally:
                if amp_dtype is not None:
                    torch.autocast_decrement_nesting()
                    torch.set_autocast_enabled('cuda', was[0])
                    torch.set_autocast_dtype('cuda', was[1])
                    torch.clear_autocast_cache()
    finally:
        torch.cuda.get_device_properties = props


def census(model: torch.nn.Module, images: Callable[[], torch.Tensor],
           forward: Callable[[torch.nn.Module, torch.Tensor], object],
           train: bool, amp_dtype: Optional[torch.dtype] = None,
           sms: int = 132) -> Census:
    """The kernels of ``forward(model, images())`` on a fake CUDA device:
    under ``torch.inference_mode``, or with ``train`` in train mode
    recording gradients (a training step's forward; its backward cannot be
    run: autograd's engine asks the CUDA driver for a context). ``model``
    is moved to the fake device, its parameters become fake: build a fresh
    one for each census."""
    result = Census()
    with fake_cuda(sms, amp_dtype):
        model.to('cuda').train(train)
        x = images()
        grad = contextlib.nullcontext() if train else torch.inference_mode()
        with grad, _Tally(result):
            forward(model, x)
    return result
