"""``import mmsparx`` keeps freed C-heap memory for reuse
(mmsparx.utils.malloc):
large tensors come from the heap, not from fresh mappings faulted in anew
on every training step."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from mmsparx.utils.malloc import ENV

# The number of separately mapped blocks while a fresh 31 MiB tensor lives
# (glibc's mallinfo2().hblks): 0 more when the heap serves it.
CHILD = '''
import ctypes, mmsparx, torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
        'fsmblks', 'uordblks', 'fordblks', 'keepcost')]

mallinfo2 = ctypes.CDLL('libc.so.6').mallinfo2
mallinfo2.restype = MallInfo2
before = mallinfo2().hblks
x = torch.empty(31 << 20, dtype=torch.uint8)
print(mallinfo2().hblks - before)
'''


def mapped_blocks(setting: str) -> int:
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE='0')
    env[ENV] = setting
    out = subprocess.run([sys.executable, '-c', CHILD], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc thresholds')
def test_large_blocks_come_from_the_heap_unless_turned_off():
    assert mapped_blocks('1') == 0
    assert mapped_blocks('0') == 1
