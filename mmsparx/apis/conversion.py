"""An authors' SparX-Mamba checkpoint file converted into an mmsparx one,
checked by a strict load into the model built from its shapes before
anything is written: what ``tools/model_converters/sparx_mamba.py`` and the
download tool (``mmsparx.model_zoo.weights``) both do, so it lives here
(a tool imports the package, never another tool)."""
from __future__ import annotations

import os.path as osp
from typing import Any, Optional, Tuple

from mmsparx.converters.detect import FAMILIES
from mmsparx.converters.loading import (check_paths, conversion_failed,
                                        load_strictly, read_authors_file)
from mmsparx.converters.sparx_mamba import (arch_name, convert_sparx_mamba,
                                            infer_arch)
from mmsparx.fileio import CheckpointError, save_checkpoint_file


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


def _check_arch(src: str, arch: Any, expected: Optional[str]) -> None:
    """Refuse a file that is not the variant it was published as."""
    if expected is not None and arch != expected:
        found = arch if isinstance(arch, str) else 'no T/S/B variant'
        raise CheckpointError(
            f'{src} holds SparX-Mamba {found}, not the {expected} variant '
            'it is listed as: the download is not that file (a wrong '
            '--url-base, or a file replaced in the cache?); delete it and '
            'fetch it again.')


def convert_sparx_mamba_file(src: str, dst: str,
                             expected_arch: Optional[str] = None) -> dict:
    """Convert ``src`` into ``dst``; return a summary (arch name or dict,
    backbone kwargs, key count). ``expected_arch`` ('tiny', ...): refuse a
    file of another variant before writing anything."""
    check_paths(src, dst)
    converted, arch, kwargs = convert_state(
        read_authors_file(src, 'SparX-Mamba'), src)
    _check_arch(src, arch, expected_arch)
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


def model_label(arch: Any) -> str:
    """'SparX-Mamba-T' for a named variant, else the arch dict."""
    letters = FAMILIES['SparX-Mamba'].letters
    if isinstance(arch, str):
        return f'SparX-Mamba-{letters.get(arch, arch)}'
    return f'SparX-Mamba arch={arch}'
