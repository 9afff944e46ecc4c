"""Triton's interpreter with its generic scan and reduce run lane-wise.

Triton 3's interpreter runs ``tl.associative_scan`` / ``tl.reduce`` with
a user combine function one element at a time: a Python call of the
combine per element of the block, about 1,000 per (16, 64) block. Our
scan kernels spend most of their interpreted time there.

The replacements below do the same left-to-right recurrence along the
axis (``acc = combine(acc, x_i)``, the accumulator cast to the input's
dtype after each step, as the element loop stores it) for every lane of
the other axes at once: the same operations in the same order for each
lane, so the same numbers. A combine of plain arithmetic on one float
dtype is applied to the numpy arrays directly, as the interpreter's
operators would apply it (``test_interpreter_lanes.py`` checks
bit-equality with the element loop). Installed for interpreted runs only
(``TRITON_INTERPRET=1``, tests/conftest.py); on a GPU the compiled
kernels never reach this code.
"""
from typing import Callable, Dict, List, Sequence

import numpy as np

# Triton's own versions, kept for the equality test.
ORIGINAL: Dict[str, Callable] = {}


def _raw_combine(fn: Callable, left: List[np.ndarray],
                 right: List[np.ndarray]) -> List[np.ndarray]:
    """The combine on the numpy arrays themselves, or ``None`` where it
    needs Triton's tensors. For combines of plain arithmetic on one float
    dtype this is what the interpreter's own operators compute (numpy's
    operator on the same arrays), without their type checks per call."""
    try:
        with np.errstate(all='ignore'):
            got = fn(*left, *right)
    except Exception:  # tl.* calls, or anything else numpy cannot take
        return None
    got = list(got) if isinstance(got, tuple) else [got]
    if len(got) != len(left) or any(
            not isinstance(g, np.ndarray) or g.dtype != a.dtype
            or g.shape != a.shape for g, a in zip(got, left)):
        return None
    return got


def _fold(ops, input: Sequence, axis: int,
          emit: Callable[[int, List[np.ndarray]], None]) -> None:
    """Apply ``ops.combine_fn`` left to right along ``axis`` to every lane,
    calling ``emit(i, accumulators)`` after step i."""
    import triton.language as tl
    dtypes = [arg.dtype for arg in input]
    data = [arg.handle.data for arg in input]
    acc = [np.take(d, 0, axis=axis).astype(d.dtype) for d in data]
    emit(0, acc)
    same_float = len({d.dtype for d in data}) == 1 and \
        data[0].dtype.kind == 'f'
    raw = same_float and all(a.ndim for a in acc)
    for i in range(1, data[0].shape[axis]):
        right = [np.take(d, i, axis=axis) for d in data]
        got = _raw_combine(ops.combine_fn.fn, acc, right) if raw else None
        if got is None:
            raw = False
            got = ops.combine_fn.fn(
                *[ops.to_tensor(a, t) for a, t in zip(acc, dtypes)],
                *[ops.to_tensor(r, t) for r, t in zip(right, dtypes)])
            got = got if isinstance(got, tuple) else (got, )
        acc = [np.broadcast_to(
            g.handle.data if isinstance(g, tl.core.tensor) else g,
            a.shape).reshape(a.shape).astype(d.dtype)
            for g, a, d in zip(got, acc, data)]
        emit(i, acc)


def lanewise_scan(self, input) -> list:
    """``ScanOps.generic_scan``, one combine call per step of the axis."""
    data = [arg.handle.data for arg in input]
    outputs = [np.zeros(d.shape, dtype=d.dtype) for d in data]

    def emit(i: int, acc: List[np.ndarray]) -> None:
        for out, a in zip(outputs, acc):
            index = [slice(None)] * out.ndim
            index[self.axis] = i
            out[tuple(index)] = a
    _fold(self, input, self.axis, emit)
    return [self.to_tensor(out, arg.dtype)
            for out, arg in zip(outputs, input)]


def lanewise_reduce(self, input) -> list:
    """``ReduceOps.generic_reduce``, one combine call per step of the
    axis."""
    original_axis = self.axis
    input, axis = self.unravel(input, self.axis)
    shape = input[0].handle.data.shape
    result: List[np.ndarray] = []

    def emit(i: int, acc: List[np.ndarray]) -> None:
        result[:] = acc
    _fold(self, input, axis, emit)
    ret = []
    for data, arg in zip(result, input):
        if self.keep_dims:
            if original_axis is not None:
                data = np.expand_dims(data, axis)
            else:
                data = data.reshape((1, ) * len(shape))
        elif original_axis is None:
            data = data.item()
        ret.append(self.to_tensor(data, arg.dtype))
    return ret


def install() -> None:
    """Route the interpreter's generic scan and reduce through the
    lane-wise versions (this process only)."""
    from triton.runtime import interpreter
    ORIGINAL.setdefault('scan', interpreter.ScanOps.generic_scan)
    ORIGINAL.setdefault('reduce', interpreter.ReduceOps.generic_reduce)
    interpreter.ScanOps.generic_scan = lanewise_scan
    interpreter.ReduceOps.generic_reduce = lanewise_reduce
