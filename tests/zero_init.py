"""Models built for their shapes only, without drawing random numbers."""
import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def zero_init() -> Iterator[None]:
    """Inside, ``Tensor.uniform_`` and ``Tensor.normal_`` (what every
    ``nn.init`` scheme and module default draws from) fill with zeros.

    For tests that read only a built model's shapes (parameter counts, a
    state dict's keys and shapes): drawing the random numbers is most of
    the time a large model takes to build, and the shapes are the same.
    """
    real = torch.Tensor.uniform_, torch.Tensor.normal_

    def zero(tensor, *args, **kwargs):
        return tensor.zero_()

    torch.Tensor.uniform_ = torch.Tensor.normal_ = zero
    try:
        yield
    finally:
        torch.Tensor.uniform_, torch.Tensor.normal_ = real
