"""Convert an authors' SparX-Mamba checkpoint to mmsparx keys.

    python tools/model_converters/sparx_mamba.py sparx_mamba_tiny_in1k.pth sparx_mamba_t_mmsparx.pth

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
from typing import Any, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))


from mmsparx.fileio import (CheckpointError,  # noqa: E402
                            save_checkpoint_file)
from mmsparx.converters.loading import (CLI_ERRORS,  # noqa: E402
                                        check_paths, conversion_failed,
                                        exit_with, load_strictly,
                                        read_authors_file)
from mmsparx.converters.sparx_mamba import (arch_name,  # noqa: E402
                                            convert_sparx_mamba, infer_arch)


def convert_state(state: dict, src: str) -> Tuple[dict, Any, dict]:
    """(converted keys, arch name or dict, backbone kwargs) of an authors'
    state dict; a truncated or edited one is refused in one paragraph."""
    try:
        converted = convert_sparx_mamba(state)
        arch, kwargs = infer_arch(state)
    except CheckpointError:
        raise
    except (KeyError, ValueError) as err:
        raise conversion_failed(src, err) from err
    return converted, arch_name(arch) or arch, kwargs


def convert_file(src: str, dst: str) -> dict:
    """Convert ``src`` into ``dst``; return a summary (arch name or dict,
    backbone kwargs, key count)."""
    check_paths(src, dst)
    converted, arch, kwargs = convert_state(read_authors_file(src, 'SparX-Mamba'), src)
    backbone = dict(type='SparXMamba', arch=arch,
                    dmca_scale=kwargs['dmca_scale'])
    if 'head.fc.weight' in converted:
        from mmsparx.models.variants import build_image_classifier
        model = build_image_classifier(
            dict(backbone, out_indices=(3, ), out_norm='gn'),
            converted['head.fc.weight'].shape[1],
            converted['head.fc.weight'].shape[0])
        load_strictly(model, converted, src)
    else:
        from mmsparx.models.backbones import SparXMamba
        dense = {k[len('backbone.'):]: v for k, v in converted.items()
                 if k.startswith('backbone.')}
        has_norms = any(k.startswith('out_norms.') for k in dense)
        model = SparXMamba(arch, out_indices=kwargs['out_indices'],
                           out_norm='ln' if has_norms else None,
                           dmca_scale=kwargs['dmca_scale'])
        load_strictly(model, dense, src)
    meta = {'converted_from': osp.basename(src), 'arch': arch,
            'dmca_scale': kwargs['dmca_scale']}
    save_checkpoint_file({'state_dict': converted, 'meta': meta}, dst)
    return dict(arch=arch, dmca_scale=kwargs['dmca_scale'],
                keys=len(converted))


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
    name = (f'SparX-Mamba-{summary["arch"]}' if isinstance(
        summary['arch'], str) else f'SparX-Mamba arch={summary["arch"]}')
    print(f'converted {name} ({summary["keys"]} keys, strict load passed) '
          f'-> {args.dst}; backbone: dmca_scale={summary["dmca_scale"]!r}')


if __name__ == '__main__':
    main()
