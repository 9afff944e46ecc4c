"""A detector from a config and a checkpoint, run on one image from Python.

    python demo/detect_image.py IMAGE [--config CONFIG] \\
        [--checkpoint FILE | none] [--score-thr 0.3]

prints one line per detection: class, score, box (x1 y1 x2 y2 in the
image's pixels). The defaults are the Mask R-CNN demo (small SparX-Mamba)
and the checkpoint ``make demo DEMO=maskrcnn`` trains; ``--checkpoint
none`` runs the random initial weights (a smoke run). Runs on a CPU.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmsparx.apis import load_predictor, predict  # noqa: E402

CONFIG = osp.join(ROOT, 'configs', 'demo',
                  'maskrcnn_sparx_small_fpn_shapes.py')
CHECKPOINT = osp.join(ROOT, 'work_dirs', 'demo_maskrcnn', 'epoch_12.pth')


def main(argv: Optional[List[str]] = None,
         cfg_options: Optional[dict] = None
         ) -> List[Tuple[str, float, List[float]]]:
    """Print and return (class, score, box) per detection."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('image')
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--checkpoint', default=CHECKPOINT,
                        help="trained checkpoint, or 'none'")
    parser.add_argument('--score-thr', type=float, default=0.3)
    args = parser.parse_args(argv)

    # The model as tools/test.py builds it, its weights loaded whole.
    predictor = load_predictor(args.config, args.checkpoint, cfg_options,
                               device='cpu')
    # The config's test pipeline on the file, then the model's predict.
    result = predict(predictor, args.image).pred_instances
    found = []
    for box, label, score in zip(result.bboxes.tolist(),
                                 result.labels.tolist(),
                                 result.scores.tolist()):
        if score >= args.score_thr:
            found.append((predictor.classes[label], score, box))
            print(f'{predictor.classes[label]:<12} {score:.3f}  ' +
                  ' '.join(f'{v:7.1f}' for v in box))
    print(f'{len(found)} detections with score >= {args.score_thr}')
    return found


if __name__ == '__main__':
    main()
