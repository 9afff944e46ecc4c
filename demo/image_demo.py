"""Run one image through a model of a config and draw the answer.

    python demo/image_demo.py CONFIG CHECKPOINT IMAGE --out FILE \\
        [--device cpu] [--score-thr 0.3] [--topk 5] \\
        [--cfg-options KEY=VALUE ...]

The task is the config's (its toolbox): a detector's boxes (and masks)
with class names and scores, a segmentor's class map over the image with
a legend, or a classifier's top classes and probabilities written on the
image. The same is printed. The picture has the image's size.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmengine.config import DictAction  # noqa: E402

EPILOG = """\
CHECKPOINT is the trained model: a checkpoint tools/train.py wrote for
CONFIG, or the output of tools/model_converters/ for an authors' file.
It must fill the whole model (a backbone-only ImageNet file is refused).
Give 'none' for no checkpoint: the model keeps the random weights it is
built with, which tests the pipeline and the drawing, not a prediction.

Class names come from the checkpoint (tools/train.py stores them), else
from the config's test dataset; where neither fits the model, classes
are numbered.
"""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw a model's prediction for one image: detection,\n"
        'segmentation or classification, read off the config.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint',
                        help="trained checkpoint (.pth), or 'none'")
    parser.add_argument('image', help='image file')
    parser.add_argument('--out', required=True,
                        help='picture to write (.png, .jpg)')
    parser.add_argument('--device', default='cpu',
                        help='cpu (default) or cuda[:N]')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw boxes scoring at least this '
                        '(default 0.3)')
    parser.add_argument('--topk', type=int, default=5,
                        help='classification: how many classes to write '
                        '(default 5)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from mmsparx.apis import (describe, draw_prediction, load_predictor,
                              predict)
    from mmsparx.apis.inference import InferenceError, check_image
    from mmsparx.apis.pictures import read_image
    check_image(args.image)
    if args.topk < 1:
        raise InferenceError(f'--topk {args.topk}: give 1 or more.')
    import cv2
    if not osp.isdir(osp.dirname(osp.abspath(args.out))):
        raise InferenceError(f'--out {args.out}: its folder does not '
                             f'exist; create it or write elsewhere.')
    if not cv2.haveImageWriter(args.out):
        raise InferenceError(f'--out {args.out}: OpenCV writes no such '
                             f'file type; give a .png or .jpg name.')
    predictor = load_predictor(args.config, args.checkpoint,
                               args.cfg_options, args.device)
    sample = predict(predictor, args.image)
    picture = draw_prediction(predictor, read_image(args.image), sample,
                              args.score_thr, args.topk)
    weights = predictor.weights or 'none (random weights)'
    print(f'{predictor.task}: {osp.basename(args.config)}, weights '
          f'{weights}, class names from {predictor.names_from}')
    print('\n'.join(describe(predictor, sample, args.score_thr, args.topk)))
    if not cv2.imwrite(args.out, picture):
        raise InferenceError(f'--out {args.out}: could not be written; '
                             f'check the folder is writable.')
    print(f'wrote {args.out}')


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from mmsparx.apis.inference import InferenceError
    from mmsparx.fileio import CheckpointError
    from mmsparx.registry import UnknownArgumentError
    try:
        run(args)
    except (InferenceError, CheckpointError, UnknownArgumentError,
            FileNotFoundError) as err:
        print(f'image_demo.py: error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
