"""``import mmsparx`` before torch puts torch's large CPU allocations on
transparent huge pages (THP_MEM_ALLOC_ENABLE), unless the variable is set."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# A 64 MiB tensor, written, then the process's huge-page total (kB).
CHILD = '''
import mmsparx, os, re, torch
x = torch.ones(64 << 20, dtype=torch.uint8)
with open('/proc/self/smaps_rollup') as f:
    huge = int(re.search(r'AnonHugePages:\\s+(\\d+)', f.read()).group(1))
print(os.environ.get('THP_MEM_ALLOC_ENABLE'), huge)
'''


def thp_mode() -> str:
    try:
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            return re.search(r'\[(\w+)\]', f.read()).group(1)
    except (OSError, AttributeError):
        return 'unavailable'


def run_child(value=None):
    env = {k: v for k, v in os.environ.items()
           if k != 'THP_MEM_ALLOC_ENABLE'}
    if value is not None:
        env['THP_MEM_ALLOC_ENABLE'] = value
    out = subprocess.run([sys.executable, '-c', CHILD], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    setting, huge_kb = out.stdout.split()[-2:]
    return setting, int(huge_kb)


@pytest.mark.skipif(thp_mode() != 'madvise', reason='the kernel must hand '
                    'out huge pages on request only (THP mode madvise) for '
                    'the allocator setting to show')
def test_import_before_torch_gives_huge_pages():
    setting, huge_kb = run_child()
    assert setting == '1'
    assert huge_kb >= 32 << 10  # most of the 64 MiB
    setting, huge_kb = run_child('0')
    assert setting == '0' and huge_kb < 32 << 10


def test_a_set_value_is_kept():
    assert run_child('0')[0] == '0'
    assert run_child('1')[0] == '1'
