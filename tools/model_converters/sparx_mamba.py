"""Convert an authors' SparX-Mamba checkpoint to mmsparx keys.

    python tools/model_converters/sparx_mamba.py SRC DST
    (e.g. sparx_mamba_tiny_in1k.pth checkpoints/sparx_mamba_t_in1k.pth)

tools/model_converters/download.py fetches and converts the published
files in one step.

The model is read off the file's shapes (any size, not only T/S/B):
classification files become an mmpretrain ImageClassifier state dict
(checked by a strict load of the whole classifier); detection and
segmentation files keep their necks and heads, the backbone renamed
(checked by a strict load of the backbone, the detection models' learned
DMCA scales included). The output is written only after the check passes,
and never over the input; the backbone arguments it needs are printed and
stored in its ``meta``. A missing, truncated or wrong file (another family,
an mmsparx file) is reported in one paragraph with the fix (exit status 1).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))


from mmsparx.apis.conversion import (convert_sparx_mamba_file,  # noqa: E402
                                     convert_state, model_label)
from mmsparx.converters.loading import CLI_ERRORS, exit_with  # noqa: E402

__all__ = ['convert_file', 'convert_state', 'main']


def convert_file(src: str, dst: str) -> dict:
    """Convert ``src`` into ``dst``; return a summary (arch name or dict,
    backbone kwargs, key count)."""
    return convert_sparx_mamba_file(src, dst)


def main(argv=None) -> None:
    """Convert; a bad input exits with status 1 and one paragraph on
    stderr (a traceback only for a bug)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('src', help="authors' checkpoint")
    parser.add_argument('dst', help='output path (.pth)')
    args = parser.parse_args(argv)
    try:
        summary = convert_file(args.src, args.dst)
    except CLI_ERRORS as err:
        exit_with(parser.prog, err)
    name = model_label(summary['arch'])
    print(f'converted {name} ({summary["keys"]} keys, strict load passed) '
          f'-> {args.dst}; backbone: dmca_scale={summary["dmca_scale"]!r}')


if __name__ == '__main__':
    main()
