"""How many bytes a forward keeps for its backward.

Peak memory mixes activations with weights, gradients, optimizer state and
the allocator's caching; the tensors autograd saves are the part a model's
design decides (and what activation checkpointing or fused kernels cut).
:func:`saved_bytes` counts them exactly, on any device, through
``torch.autograd.graph.saved_tensors_hooks``.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Set, Tuple

import torch
from torch import nn

StorageKey = Tuple[str, int]


def _key(storage: torch.UntypedStorage) -> StorageKey:
    return str(storage.device), storage.data_ptr()


def model_storages(model: nn.Module) -> Set[StorageKey]:
    """The storages of a model's parameters and buffers: what a forward
    saves of these is the model itself, not activations."""
    tensors = list(model.parameters()) + list(model.buffers())
    return {_key(t.untyped_storage()) for t in tensors}


def saved_bytes(fn: Callable[[], object],
                exclude: Iterable[StorageKey] = ()) -> int:
    """Run ``fn()`` and return the bytes of every storage autograd saved
    for backward during it, each storage once (views and tensors saved by
    several ops share one), leaving out the storages in ``exclude`` (see
    :func:`model_storages`). The saved storages are held until ``fn``
    returns, so a freed one's address cannot be counted twice."""
    excluded = set(exclude)
    seen: Dict[StorageKey, torch.UntypedStorage] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.layout == torch.strided:
            storage = tensor.untyped_storage()
            key = _key(storage)
            if key not in excluded and key not in seen:
                seen[key] = storage
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storage.nbytes() for storage in seen.values())
