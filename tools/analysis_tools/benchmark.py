"""One benchmark tool, one subcommand per measurement; all time through
one timer (warm-up, device synchronisation, median of the timed runs:
``mmsparx.analysis.timing``) and measure peak memory one way
(``mmsparx.analysis.peak_memory``), so that their figures compare.

    python tools/analysis_tools/benchmark.py model NAME [--compare NAME ...] [--train | --dense] [--amp] [--ops] [--compile] [--json]
    python tools/analysis_tools/benchmark.py step CONFIG ... [--size H W] [--amp] [--json]
    python tools/analysis_tools/benchmark.py ss2d [--shapes ...] [--paths ...] [--json]
    python tools/analysis_tools/benchmark.py norm [--shapes ...] [--json]
    python tools/analysis_tools/benchmark.py scan [--batch B --width D --length L] [--json]
    python tools/analysis_tools/benchmark.py census NAME [--compare NAME ...] [--train | --dense] [--json]

``benchmark.py SUBCOMMAND --help`` describes each.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmsparx.analysis.benchmarks import SUBCOMMANDS, SUMMARIES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    subparsers = parser.add_subparsers(dest='subcommand', required=True,
                                       metavar='{' + ','.join(SUBCOMMANDS)
                                       + '}')
    for name, module in SUBCOMMANDS.items():
        sub = subparsers.add_parser(
            name, help=SUMMARIES[name], description=module.__doc__,
            formatter_class=argparse.RawTextHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    sys.exit(main())
