"""The one activation table of mmsparx's layers.

Configs name activations as the papers' code does ('GELU', 'SiLU', 'relu'
...): any case is accepted. The C++ kernels take an activation by code
(:data:`KERNEL_CODES`); :func:`activate` is the same function in PyTorch.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

import torch.nn.functional as F
from torch import Tensor, nn

# name -> (module class, whether it can run in place, the functional form)
ACTIVATIONS: Dict[str, tuple] = {
    'gelu': (nn.GELU, False, F.gelu),
    'silu': (nn.SiLU, True, F.silu),
    'relu': (nn.ReLU, True, F.relu),
}
# The fused C++ kernels' activation argument (none, GELU, SiLU).
KERNEL_CODES: Dict[Optional[str], int] = {None: 0, 'gelu': 1, 'silu': 2}


def _key(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f'unknown activation {name!r}: act must be one of '
                         f'{sorted(ACTIVATIONS)} (any case) or None')
    return key


def build_activation(name: Optional[str], inplace: bool = False
                     ) -> nn.Module:
    """The module for ``name`` (identity for None). ``inplace``: SiLU and
    ReLU overwrite their input, as the official RT-DETR's do; only where
    autograd does not need that input (after a BN or a sum)."""
    key = _key(name)
    if key is None:
        return nn.Identity()
    cls, can_inplace, _ = ACTIVATIONS[key]
    return cls(inplace=True) if inplace and can_inplace else cls()


def activate(x: Tensor, name: Optional[str]) -> Tensor:
    """``name``'s activation of ``x`` (identity for None)."""
    key = _key(name)
    return x if key is None else ACTIVATIONS[key][2](x)


def activate_by_code(x: Tensor, code: int) -> Tensor:
    """:func:`activate` by the kernels' code (:data:`KERNEL_CODES`)."""
    if code == 1:
        return F.gelu(x)
    return F.silu(x) if code == 2 else x


def activation_backward(grad: Tensor, x: Tensor, code: int) -> Tensor:
    """The gradient autograd gives ``x`` through ``activate_by_code(x,
    code)`` (the same ATen backward kernels)."""
    if code == 1:
        return torch.ops.aten.gelu_backward(grad, x)
    return torch.ops.aten.silu_backward(grad, x) if code == 2 else grad
