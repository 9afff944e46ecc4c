"""Convert an authors' SpaRTAN checkpoint to mmsparx keys.

    python tools/model_converters/spartan.py spartan_t_authors.pth checkpoints/spartan_t_in1k.pth

The authors' ``{'model': ...}`` files (``conv.*``, flat ``layers.{k}``,
``linear.*``) become an mmpretrain ImageClassifier state dict, checked by a
strict load into a SpaRTAN classifier built with the architecture read
from the tensor shapes (XT and T by name, any other size built from the
same layers, e.g. the public SpaRTAN-S, as an ``arch`` dict that is
printed for your config). Files
without the ``linear`` head keep their other keys and get the backbone
renamed (strict load of the backbone). The output is written only after
the check passes, and never over the input. A missing, truncated or wrong
file (another family, an mmsparx file) is reported in one paragraph with
the fix (exit status 1).
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
from mmsparx.converters.spartan import (arch_name, convert_spartan,  # noqa
                                        infer_arch)


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


def convert_state(state: dict, src: str) -> Tuple[dict, dict, Any]:
    """(converted keys, arch dict, variant name or None) of an authors'
    state dict; a truncated or edited one is refused in one paragraph."""
    try:
        converted = convert_spartan(state)
        arch = infer_arch(state)
    except CheckpointError:
        raise
    except (KeyError, ValueError) as err:
        raise conversion_failed(src, err) from err
    return converted, arch, arch_name(arch)


def convert_file(src: str, dst: str) -> dict:
    """Convert ``src`` into ``dst``; return a summary."""
    check_paths(src, dst)
    converted, arch, name = convert_state(read_authors_file(src, 'SpaRTAN'), src)
    if 'head.fc.weight' in converted:
        model = build_classifier(name or arch,
                                 converted['head.fc.weight'].shape[0],
                                 arch['channels'][3])
        load_strictly(model, converted, src)
    else:
        from mmsparx.models.backbones import SpaRTAN
        dense = {k[len('backbone.'):]: v for k, v in converted.items()
                 if k.startswith('backbone.')}
        load_strictly(SpaRTAN(name or arch, out_indices=(3, ),
                              out_norm=None), dense, src)
    meta = {'converted_from': osp.basename(src), 'arch': name or arch}
    save_checkpoint_file({'state_dict': converted, 'meta': meta}, dst)
    return dict(arch=name or arch, keys=len(converted))


def main(argv=None) -> None:
    """Convert; a bad input exits with status 1 and one paragraph on
    stderr (a traceback only for a bug)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help="authors' checkpoint")
    parser.add_argument('dst', help='output path (.pth)')
    args = parser.parse_args(argv)
    try:
        summary = convert_file(args.src, args.dst)
    except CLI_ERRORS as err:
        exit_with(parser.prog, err)
    arch = summary['arch']
    label = f'SpaRTAN-{arch.upper()}' if isinstance(arch, str) else \
        f'SpaRTAN with arch={arch}'
    print(f'converted {label} ({summary["keys"]} keys, strict load passed) '
          f'-> {args.dst}')


if __name__ == '__main__':
    main()
