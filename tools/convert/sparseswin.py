"""Convert an authors' SparseSwin state dict to mmsparx keys.

    python tools/convert/sparseswin.py SparseSwin_l2_0.0001_100.pt checkpoints/sparseswin_t_in100.pth [--sparta-heads 16]

The authors save ``model.state_dict()`` of their ``SparseSwin`` (keys
``swin_model.*``, ``step4.*``, ``norm.*``, ``fc_out.*``). The result is an
mmpretrain ``SparseSwinClassifier`` / ``ImageClassifier`` state dict
(``backbone.*``, ``head.fc.*``), checked by a strict load into a classifier
whose arch, input size and class count are read from the file (the SparTa
head count leaves no trace in the weights: ``--sparta-heads``, 16 in the
public setting). The output is written only after the check passes, and
never over the input. The backbones also load the authors' file as it is
through ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmsparx.checkpoint import (load_checkpoint_file, load_state_dict,  # noqa
                                state_dict_of)
from mmsparx.converters.sparseswin import (convert_sparseswin,  # noqa: E402
                                           detect_layout, infer_arch)


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


def convert_file(src: str, dst: str, sparta_heads: int = 16) -> dict:
    """Convert ``src`` into ``dst``; return a summary."""
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError('refusing to overwrite the input checkpoint; give '
                         'another output path')
    state = state_dict_of(load_checkpoint_file(src))
    layout = detect_layout(state)
    if layout != 'authors':
        raise ValueError(
            f'{src} is not in the authors\' SparseSwin layout (no '
            f'swin_model.* / step4.* keys; it looks like the {layout} '
            f'layout). Nothing to convert: the SparseSwin backbones load '
            f'it through init_cfg as it is.')
    arch, img_size, num_classes = infer_arch(state, sparta_heads)
    converted = convert_sparseswin(state)
    model = build_model(arch, img_size, num_classes)
    load_state_dict(model, converted, strict=True)
    torch.save({'state_dict': converted,
                'meta': {'converted_from': osp.basename(src), 'arch': arch,
                         'img_size': img_size,
                         'num_classes': num_classes}}, dst)
    return dict(arch=arch, img_size=img_size, num_classes=num_classes,
                keys=len(converted),
                params=sum(p.numel() for p in model.parameters()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('src', help="authors' state dict")
    parser.add_argument('dst', help='output path (.pth)')
    parser.add_argument('--sparta-heads', type=int, default=16,
                        help='heads of the SparTa layers (16 in the '
                        'authors\' public setting)')
    args = parser.parse_args(argv)
    summary = convert_file(args.src, args.dst, args.sparta_heads)
    arch = summary['arch']
    print(f'converted SparseSwin ({arch["num_tokens"]} tokens x '
          f'{arch["token_dims"]}, {arch["sparta_depth"]} SparTa layers, '
          f'{summary["img_size"][0]}x{summary["img_size"][1]} input, '
          f'{summary["num_classes"]} classes, {summary["params"]:,} '
          f'parameters, {summary["keys"]} keys, strict load passed) -> '
          f'{args.dst}')


if __name__ == '__main__':
    main()
