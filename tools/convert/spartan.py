"""Convert an authors' SpaRTAN checkpoint to mmsparx keys.

    python tools/convert/spartan.py spartan_t_authors.pth checkpoints/spartan_t_in1k.pth

The authors' ``{'model': ...}`` files (``conv.*``, flat ``layers.{k}``,
``linear.*``) become an mmpretrain ImageClassifier state dict, checked by a
strict load into a SpaRTAN classifier built with the architecture read
from the tensor shapes (XT and T by name, any other size built from the
same layers, e.g. the public SpaRTAN-S, as an ``arch`` dict that is
printed for your config). Files
without the ``linear`` head keep their other keys and get the backbone
renamed (strict load of the backbone). The output is written only after
the check passes, and never over the input.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmsparx.checkpoint import (load_checkpoint_file, load_state_dict,  # noqa
                                state_dict_of)
from mmsparx.converters.spartan import (arch_name, convert_spartan,  # noqa
                                        infer_arch, is_spartan_layout)


def build_classifier(arch, num_classes: int, in_channels: int):
    """An mmpretrain ImageClassifier shaped as the authors' model: SpaRTAN,
    GAP, linear (no final norm)."""
    import mmsparx  # noqa: F401  registers SpaRTAN
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='SpaRTAN', arch=arch, out_indices=(3, ),
                          out_norm=None),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=num_classes,
                      in_channels=in_channels)))


def convert_file(src: str, dst: str) -> dict:
    """Convert ``src`` into ``dst``; return a summary."""
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError('refusing to overwrite the input checkpoint; give '
                         'another output path')
    state = state_dict_of(load_checkpoint_file(src))
    if not is_spartan_layout(state):
        raise ValueError(f'{src} is not in the authors\' SpaRTAN layout (no '
                         'conv.0.* / layers.{k}.smixer.* keys); nothing to '
                         'convert. mmsparx files load as they are.')
    converted = convert_spartan(state)
    arch = infer_arch(state)
    name = arch_name(arch)
    if 'head.fc.weight' in converted:
        model = build_classifier(name or arch,
                                 converted['head.fc.weight'].shape[0],
                                 arch['channels'][3])
        load_state_dict(model, converted, strict=True)
    else:
        from mmsparx.models.backbones import SpaRTAN
        dense = {k[len('backbone.'):]: v for k, v in converted.items()
                 if k.startswith('backbone.')}
        load_state_dict(SpaRTAN(name or arch, out_indices=(3, ),
                                out_norm=None), dense, strict=True)
    torch.save({'state_dict': converted,
                'meta': {'converted_from': osp.basename(src),
                         'arch': name or arch}}, dst)
    return dict(arch=name or arch, keys=len(converted))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help="authors' checkpoint")
    parser.add_argument('dst', help='output path (.pth)')
    args = parser.parse_args(argv)
    summary = convert_file(args.src, args.dst)
    arch = summary['arch']
    label = f'SpaRTAN-{arch.upper()}' if isinstance(arch, str) else \
        f'SpaRTAN with arch={arch}'
    print(f'converted {label} ({summary["keys"]} keys, strict load passed) '
          f'-> {args.dst}')


if __name__ == '__main__':
    main()
