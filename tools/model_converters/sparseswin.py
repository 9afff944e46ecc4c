"""Convert an authors' SparseSwin state dict to mmsparx keys.

    python tools/model_converters/sparseswin.py SparseSwin_l2_0.0001_100.pt checkpoints/sparseswin-t_in100.pth [--sparta-heads 16]

The authors save ``model.state_dict()`` of their ``SparseSwin`` (keys
``swin_model.*``, ``step4.*``, ``norm.*``, ``fc_out.*``). The result is an
mmpretrain ``SparseSwinClassifier`` / ``ImageClassifier`` state dict
(``backbone.*``, ``head.fc.*``), checked by a strict load into a classifier
whose arch, input size and class count are read from the file (the SparTa
head count leaves no trace in the weights: ``--sparta-heads``, 16 in the
public setting). The output is written only after the check passes, and
never over the input. The backbones also load the authors' file as it is
through ``init_cfg=dict(type='Pretrained', checkpoint=...)``. A missing,
truncated or wrong file (another family, an mmsparx or Swin file) is
reported in one paragraph with the fix (exit status 1).
"""
import argparse
import os.path as osp
import sys
from typing import Any, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))


from mmsparx.fileio import (CheckpointError,  # noqa: E402
                            save_checkpoint_file)
from mmsparx.converters.loading import (CLI_ERRORS,  # noqa: E402
                                        check_paths, conversion_failed,
                                        exit_with, load_strictly,
                                        read_authors_file)
from mmsparx.converters.sparseswin import (convert_sparseswin,  # noqa: E402
                                           infer_arch)


def build_model(arch: dict, img_size, num_classes: int):
    """The mmpretrain classifier the converted keys must fill."""
    import mmsparx  # noqa: F401  registers SparseSwin
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='SparseSwin', arch=arch, img_size=img_size),
            neck=None,
            head=dict(type='LinearClsHead', num_classes=num_classes,
                      in_channels=arch['token_dims'])))


def convert_state(state: dict, src: str, sparta_heads: int
                  ) -> Tuple[dict, dict, Any, int]:
    """(converted keys, arch, img_size, num_classes) of an authors' state
    dict; a truncated or edited one is refused in one paragraph."""
    try:
        arch, img_size, num_classes = infer_arch(state, sparta_heads)
        converted = convert_sparseswin(state)
    except CheckpointError:
        raise
    except (KeyError, ValueError) as err:
        raise conversion_failed(src, err) from err
    if num_classes is None:
        raise CheckpointError(f'{src} has no fc_out.* (the authors\' head): '
                              'it is truncated or not their classifier.')
    return converted, arch, img_size, num_classes


def convert_file(src: str, dst: str, sparta_heads: int = 16) -> dict:
    """Convert ``src`` into ``dst``; return a summary."""
    check_paths(src, dst)
    converted, arch, img_size, num_classes = convert_state(
        read_authors_file(src, 'SparseSwin'), src, sparta_heads)
    model = build_model(arch, img_size, num_classes)
    load_strictly(model, converted, src)
    meta = {'converted_from': osp.basename(src), 'arch': arch,
            'img_size': img_size, 'num_classes': num_classes}
    save_checkpoint_file({'state_dict': converted, 'meta': meta}, dst)
    return dict(arch=arch, img_size=img_size, num_classes=num_classes,
                keys=len(converted),
                params=sum(p.numel() for p in model.parameters()))


def main(argv=None) -> None:
    """Convert; a bad input exits with status 1 and one paragraph on
    stderr (a traceback only for a bug)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('src', help="authors' state dict")
    parser.add_argument('dst', help='output path (.pth)')
    parser.add_argument('--sparta-heads', type=int, default=16,
                        help='heads of the SparTa layers (16 in the '
                        'authors\' public setting)')
    args = parser.parse_args(argv)
    try:
        summary = convert_file(args.src, args.dst, args.sparta_heads)
    except CLI_ERRORS as err:
        exit_with(parser.prog, err)
    arch = summary['arch']
    print(f'converted SparseSwin ({arch["num_tokens"]} tokens x '
          f'{arch["token_dims"]}, {arch["sparta_depth"]} SparTa layers, '
          f'{summary["img_size"][0]}x{summary["img_size"][1]} input, '
          f'{summary["num_classes"]} classes, {summary["params"]:,} '
          f'parameters, {summary["keys"]} keys, strict load passed) -> '
          f'{args.dst}')


if __name__ == '__main__':
    main()
