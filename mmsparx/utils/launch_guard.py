"""Workers that die with their launcher.

torchrun starts each worker in a new session (``start_new_session=True``),
so when torchrun itself is SIGKILLed (an OOM killer, ``kill -9``, a
scheduler) nothing forwards the signal: the workers kept training and wrote
checkpoints into the work dir a ``--resume`` would then pick up. Linux can
deliver a signal to a process when its parent dies (``PR_SET_PDEATHSIG``);
each worker asks for SIGKILL at start. Not SIGTERM: that asks
``PreemptionHook`` to finish the iteration and save, which an orphan
cannot do (the launcher's rendezvous went with it, so the next all-reduce
may never return), and dying mid-write loses nothing (checkpoints are
written to a part file and renamed).
"""
import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets these for every worker."""
    return 'LOCAL_RANK' in os.environ and 'TORCHELASTIC_RUN_ID' in os.environ


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Returns False where that is not available (not Linux, no libc). Exits at
    once when the parent is already gone: the request only covers a death
    after it is made, and an orphan's parent is no longer the launcher.
    """
    if not sys.platform.startswith('linux'):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6',
                           use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent == 1 or os.getppid() != parent:
        sys.exit(f'mmsparx: the launcher (pid {parent}) exited before this '
                 'worker started; stopping.')
    return True


def guard_launch() -> None:
    """Called first in tools/train.py and tools/test.py: a worker of
    torchrun dies with it (see the module docstring)."""
    if launched_by_torchrun():
        die_with_parent()
