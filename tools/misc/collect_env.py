"""Print what is installed here and which scan runs (OpenMMLab's
collect_env with mmsparx's lines); the same as
``python -m mmsparx.analysis.collect_env``.

    python tools/misc/collect_env.py
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from mmsparx.analysis.collect_env import main  # noqa: E402

if __name__ == '__main__':
    main()
