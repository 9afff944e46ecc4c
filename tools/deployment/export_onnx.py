"""Export a trained mmsparx model to ONNX, optionally checked in ONNX Runtime.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out FILE \\
        [--shape H W] [--batch N | --dynamic-batch] [--opset K] \\
        [--seg-output logits|argmax] [--check] [--json] \\
        [--cfg-options KEY=VALUE ...]

What the graph computes (README, "Deployment"):

* mmpretrain configs: images -> logits;
* RT-DETR configs: images in [0, 1] and orig_target_sizes (width, height)
  -> labels, boxes (xyxy, original pixels), scores of the top 300; the
  RepVGG blocks folded;
* mmseg configs: images -> seg_logits [N, K, H, W] (``--seg-output
  argmax``: seg_map [N, H, W]), ``encode_decode`` on the whole image.

Images are RGB, normalised as the config's data preprocessor does; the
mean / std are printed and stored in the file's metadata. ``--check`` runs
the file in ONNX Runtime on generated images (a batch of 2 when the batch
is dynamic, traced at 1) and compares with the PyTorch model; it exits 1
when a bound is missed.
"""
import argparse
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmengine.config import DictAction  # noqa: E402

from mmsparx.utils.cli import json_stdout  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export an mmsparx config + checkpoint to ONNX.')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='the trained model (.pth): a '
                        'tools/train.py checkpoint or a converted file')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='network input size (default: the test crop '
                        'for classifiers, 640x640 for RT-DETR, the crop '
                        'size for segmentors)')
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument('--batch', type=int, default=1,
                       help='fixed batch size (default 1)')
    batch.add_argument('--dynamic-batch', action='store_true',
                       help='leave the batch axis free')
    parser.add_argument('--opset', type=int, default=None,
                        help='ONNX opset (default 17)')
    parser.add_argument('--seg-output', choices=('logits', 'argmax'),
                        default='logits', help='segmentors: per-pixel '
                        'class logits or the argmax map')
    parser.add_argument('--check', action='store_true',
                        help='run the file in ONNX Runtime and compare '
                        'with PyTorch')
    parser.add_argument('--json', action='store_true',
                        help='print only a JSON summary')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmsparx.deploy import DeployError, export_config
    with json_stdout(args.json):
        try:
            summary = export_config(
                args.config, args.checkpoint, args.out, shape=args.shape,
                batch=args.batch, dynamic_batch=args.dynamic_batch,
                opset=args.opset, seg_output=args.seg_output,
                check=args.check, cfg_options=args.cfg_options)
        except (DeployError, ImportError, FileNotFoundError) as err:
            print(f'export_onnx.py: error: {err}', file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f'wrote {summary["onnx"]} ({summary["task"]}, input '
              f'{summary["inputs"]}, outputs {summary["outputs"]})')
        print(f'normalisation (before the graph): '
              f'{summary["normalisation"]}')
        if 'check' in summary:
            print(f'check against PyTorch: {summary["check"]}')
    return 0 if summary.get('check', {}).get('ok', True) else 1


if __name__ == '__main__':
    sys.exit(main())
