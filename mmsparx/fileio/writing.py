"""Writing checkpoint files so that an interruption never leaves a half
file under the name: written beside it, flushed, renamed over it."""
from __future__ import annotations

import io
import os
import os.path as osp
from typing import Union

import torch

PART = '.part'


def write_atomically(data: Union[bytes, str], filepath: str) -> None:
    """Write ``data`` to ``filepath + '.part'`` (creating the folder),
    flush it to disk and rename it over ``filepath``; the part file goes
    if anything interrupts."""
    os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
    part = str(filepath) + PART
    mode = 'wb' if isinstance(data, bytes) else 'w'
    try:
        with open(part, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, filepath)
    except BaseException:
        if osp.exists(part):
            os.remove(part)
        raise


def save_checkpoint_file(obj: dict, filepath: str) -> None:
    """``torch.save`` of ``obj``, serialised in memory and written with
    :func:`write_atomically`: ``filepath`` is whole or untouched."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(buffer.getvalue(), osp.expanduser(filepath))
