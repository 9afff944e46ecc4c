"""Exit 1 with the fix when this interpreter cannot run the launchers.

    $PYTHON tools/misc/check_python.py SCRIPT

dist_*.sh and slurm_*.sh run this first with the interpreter they chose, so
a ``python`` without torch is one line naming it and the fix instead of
``No module named 'torch'`` from inside torchrun or srun. Only looks the
packages up (no import): the check costs milliseconds.
"""
import importlib.util
import os.path as osp
import sys

NEEDED = ('torch', 'mmengine')


def missing() -> list:
    """The packages the launched tools need that are not installed."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def main(argv) -> int:
    script = argv[0] if argv else 'launcher'
    lacking = missing()
    if not lacking:
        return 0
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    print(f'{osp.basename(script)}: {sys.executable} has no '
          f'{" and no ".join(lacking)}: run `make setup` in {root} (the '
          f'launchers then use its .venv when PYTHON is unset) or set PYTHON '
          f'to an interpreter that has them, e.g. PYTHON={root}/.venv/bin/'
          f'python {script} ...', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
