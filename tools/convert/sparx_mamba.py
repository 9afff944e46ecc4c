"""Convert an authors' SparX-Mamba checkpoint to mmsparx keys.

    python tools/convert/sparx_mamba.py sparx_mamba_tiny_in1k.pth sparx_mamba_t_mmsparx.pth

Classification files become an mmpretrain ImageClassifier state dict
(checked by a strict load into ``sparx-mamba-{t,s,b}``); detection and
segmentation files keep their necks and heads, the backbone renamed (checked
by a strict load of the backbone). The output is written only after the
check passes, and never over the input.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmsparx.checkpoint import (load_checkpoint_file, load_state_dict,  # noqa
                                state_dict_of)
from mmsparx.converters.sparx_mamba import (convert_sparx_mamba,  # noqa: E402
                                            infer_arch, is_official_layout)


def convert_file(src: str, dst: str) -> dict:
    """Convert ``src`` into ``dst``; return a summary."""
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError('refusing to overwrite the input checkpoint; give '
                         'another output path')
    state = state_dict_of(load_checkpoint_file(src))
    if not is_official_layout(state):
        raise ValueError(f'{src} is not in the authors\' SparX-Mamba layout '
                         '(no patch_embed.* / layers.* keys); nothing to do')
    converted = convert_sparx_mamba(state)
    arch = infer_arch(state)
    from mmsparx.models.backbones import SparXMamba
    if any(k.startswith('head.fc.') for k in converted):
        from mmsparx.models.variants import build_classifier
        model = build_classifier(f'sparx-mamba-{arch[0]}',
                                 converted['head.fc.weight'].shape[0])
        load_state_dict(model, converted, strict=True)
    else:
        dense = {k[len('backbone.'):]: v for k, v in converted.items()
                 if k.startswith('backbone.')}
        outs = sorted(int(k.split('.')[1]) for k in dense
                      if k.startswith('out_norms.') and k.endswith('weight'))
        model = SparXMamba(arch, out_indices=outs or (3, ),
                           out_norm='ln' if outs else None)
        load_state_dict(model, dense, strict=True)
    torch.save({'state_dict': converted,
                'meta': {'converted_from': osp.basename(src),
                         'arch': arch}}, dst)
    return dict(arch=arch, keys=len(converted))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('src', help="authors' checkpoint")
    parser.add_argument('dst', help='output path (.pth)')
    args = parser.parse_args(argv)
    summary = convert_file(args.src, args.dst)
    print(f'converted SparX-Mamba-{summary["arch"]} ({summary["keys"]} keys,'
          f' strict load passed) -> {args.dst}')


if __name__ == '__main__':
    main()
