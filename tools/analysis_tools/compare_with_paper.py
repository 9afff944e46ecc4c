"""A finished run's metrics beside the paper's, with the difference.

    python tools/analysis_tools/compare_with_paper.py WORK_DIR
    python tools/analysis_tools/compare_with_paper.py \\
        WORK_DIR/20250101_120000/20250101_120000.json --config CONFIG

WORK_DIR: the newest run in it that has metrics; its test result
(``<timestamp>/<timestamp>.json``, what tools/test.py writes), else its
last validation (``<timestamp>/vis_data/scalars.json``). A run folder or
one of those files works too. The config is the one mmengine saved in the
work dir unless ``--config`` names it; its metafile entry
(``configs/<family>/metafile.yml``) gives the paper's numbers. Everything
is in percent: mmdet's COCO mAP 0.481 is 48.1. Exits 2 when there is
nothing to compare.
"""
import argparse
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmsparx.model_zoo.paper import (PaperComparisonError,  # noqa: E402
                                     compare, config_of_run, find_entry,
                                     format_table, used_tta)
from mmsparx.model_zoo.run_metrics import (RunMetricsError,  # noqa: E402
                                           read_metrics)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('run', help='a work dir, a run folder in it, or '
                        'its metrics file')
    parser.add_argument('--config', help='the config the run is of (default: '
                        'the one saved in the work dir)')
    parser.add_argument('--json', action='store_true',
                        help='print the rows as one JSON object')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        metrics = read_metrics(args.run)
        config = args.config or config_of_run(ROOT, metrics.work_dir)
        config, entry = find_entry(ROOT, config)
        rows = compare(metrics, entry, used_tta(metrics.run_dir))
    except (RunMetricsError, PaperComparisonError) as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(dict(config=config, metrics=metrics.path,
                              kind=metrics.kind, step=metrics.step,
                              rows=rows)))
        return
    print(f'config:  {config} ({entry["Name"]})')
    print(f'metrics: {metrics.describe()}')
    print()
    print(format_table(rows))


if __name__ == '__main__':
    main()
