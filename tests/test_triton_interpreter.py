"""Triton's interpreter runs the GPU kernels on CPU tensors. It must be
switched on before triton is imported, so one fresh process runs every
interpreter suite at once (one start-up, one import of torch and triton):
the generic scan's triton-backend tests, the cross scan's kernels, their
offsets past 2^31, their own first-use checks, and the authors' dense
SparX-Mamba run through the triton backend.

The last runs the authors' dense (segmentation) model on a crop of its
fixture's input against the per-token loop, which reproduces the authors'
outputs in the main run: the interpreter runs a kernel as Python, about 3
minutes for the whole fixture input here, and the four models differ in
sizes, not in the path through the scan. Where the kernels run on a GPU
they reproduce every fixture whole."""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

# (test file, the tests of it that use the triton backend)
SUITES = [
    ('test_selective_scan.py', 'triton'),
    ('test_triton_cross_scan.py', None),  # all of it
    ('test_triton_offsets.py', None),
    ('test_triton_kernel_check.py', 'real_kernels'),
    ('test_sparx_authors.py', 'authors_model_as_the_reference and triton'),
    ('test_interpreter_lanes.py', None),
]


def selection() -> str:
    """One ``-k`` expression for every suite: the module name is one of a
    test's keywords."""
    parts = []
    for path, words in SUITES:
        module = path[:-3]
        parts.append(f'({module} and {words})' if words else module)
    return ' or '.join(parts)


@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') == '1',
                    reason='this is the run that starts the interpreted one')
@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='the kernels run on the GPU directly here')
def test_gpu_kernels_match_under_the_interpreter():
    pytest.importorskip('triton')
    # The kernels' first-use checks are tested once, in their own file
    # (which switches them on); everywhere else they would only add
    # interpreted runs.
    env = dict(os.environ, TRITON_INTERPRET='1', MMSPARX_KERNEL_CHECK='0')
    files = [os.path.join('tests', path) for path, _ in SUITES]
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         *files, '-k', selection()], env=env, capture_output=True,
        text=True, timeout=1800, cwd=ROOT)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr
    passed = re.search(r'(\d+) passed', out)
    assert passed, out[-2000:]
    assert 'failed' not in out and 'error' not in out.lower(), out[-2000:]
    # Nothing of the suites was skipped for want of the backend.
    counts = re.findall(r'(\d+) (passed|skipped)', out)
    assert int(passed.group(1)) >= 33, out[-2000:]
    assert not [n for n, kind in counts if kind == 'skipped'], out[-2000:]


def test_the_selection_names_every_suite():
    expression = selection()
    assert '(test_selective_scan and triton)' in expression
    assert 'test_triton_cross_scan' in expression
    assert 'test_triton_offsets' in expression
    assert ('(test_sparx_authors and authors_model_as_the_reference and '
            'triton)') in expression
