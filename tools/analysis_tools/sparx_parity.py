"""SparX-Mamba against the authors' own outputs: the max abs difference per
golden fixture (tests/data/sparx_authors) and scan backend.

    python tools/analysis_tools/sparx_parity.py [--fixtures DIR] [--device cpu] [--tf32 {on,off}] [--json]

Each fixture holds an authors'-layout state dict with the keyword arguments
of the authors' class, an input and the authors' eval-mode output. The file
is converted, loaded strictly and run on every backend that runs on the
device (``TRITON_INTERPRET=1`` adds triton on CPU). The fixtures ask for
1e-4 on every logit and map.

On CUDA, TF32 matmuls and convolutions round inputs to 10-bit mantissas,
far beyond 1e-4: ``--tf32 off`` is the parity figure, ``--tf32 on`` what
a default cuDNN / ``allow_tf32`` setting gives. Both flags
(``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32``) are printed, and each JSON row holds
them; without ``--tf32`` they stay at torch's defaults.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmsparx.archs.sparx import arch_from_authors  # noqa: E402
from mmsparx.utils.cli import json_stdout  # noqa: E402
from mmsparx.fileio import load_state_dict  # noqa: E402
from mmsparx.converters.sparx_mamba import (convert_sparx_mamba,  # noqa
                                            infer_arch)

FIXTURES = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))), 'tests', 'data', 'sparx_authors')
TOLERANCE = 1e-4


def build(data: dict, arch=None, backend: str = 'auto',
          init_cfg: Optional[dict] = None) -> nn.Module:
    """The model of a fixture in mmsparx: an mmpretrain classifier when the
    authors' model has a head (``num_classes``), the dense backbone
    otherwise; the DMCA scale as the file holds it."""
    arch = arch or arch_from_authors(data['arch'])
    scale = infer_arch(data['state_dict'])[1]['dmca_scale']
    backbone = dict(type='SparXMamba', arch=arch, drop_path_rate=0.0,
                    dmca_scale=scale, scan_backend=backend,
                    init_cfg=init_cfg)
    if 'num_classes' in data['arch']:
        from mmsparx.models.variants import build_image_classifier
        channels = data['arch']['dims'][3]
        return build_image_classifier(
            dict(backbone, out_indices=(3, ), out_norm='gn'), channels,
            data['arch']['num_classes'])
    from mmsparx.models.backbones import SparXMamba
    backbone.pop('type')
    return SparXMamba(**backbone)


def converted_state(data: dict, model: nn.Module) -> Dict[str, torch.Tensor]:
    """The fixture's weights in ``model``'s keys (a bare backbone drops the
    ``backbone.`` prefix)."""
    state = convert_sparx_mamba(data['state_dict'])
    if hasattr(model, 'head'):
        return state
    return {k[len('backbone.'):]: v for k, v in state.items()}


def differences(model: nn.Module, data: dict,
                device: str = 'cpu') -> List[float]:
    """Max abs difference of each output (logits, or each map) from the
    authors' output, in eval mode."""
    model = model.to(device).eval()
    with torch.no_grad():
        x = data['input'].to(device)
        out = model(x, mode='tensor') if hasattr(model, 'head') else model(x)
    expected = data['output']
    if isinstance(expected, torch.Tensor):
        out, expected = [out], [expected]
    if len(out) != len(expected):
        raise AssertionError(f'{len(out)} outputs, the authors have '
                             f'{len(expected)}')
    diffs = []
    for got, want in zip(out, expected):
        if got.shape != want.shape:
            raise AssertionError(f'shape {tuple(got.shape)}, the authors\' '
                                 f'{tuple(want.shape)}')
        diffs.append((got.float().cpu() - want).abs().max().item())
    return diffs


def run(path: str, backend: str, device: str) -> List[float]:
    data = torch.load(path, weights_only=True)
    model = build(data, backend=backend)
    load_state_dict(model, converted_state(data, model), strict=True)
    return differences(model, data, device)


def set_tf32(mode: Optional[str]) -> Dict[str, bool]:
    """Set both TF32 flags (``'on'`` / ``'off'``; None leaves them) and
    return them as they are."""
    if mode is not None:
        torch.backends.cuda.matmul.allow_tf32 = mode == 'on'
        torch.backends.cudnn.allow_tf32 = mode == 'on'
    return dict(matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)


def main(argv=None) -> None:
    from mmsparx.ops import available_backends
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--fixtures', default=FIXTURES)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--tf32', choices=['on', 'off'],
                        help='set both TF32 flags (default: leave them)')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    tf32 = set_tf32(args.tf32)
    print('TF32: ' + ', '.join(f'{k}={v}' for k, v in tf32.items()),
          file=sys.stderr)
    paths = sorted(glob.glob(osp.join(args.fixtures, '*.pt')))
    if not paths:
        parser.error(f'no fixtures (*.pt) in {args.fixtures}')
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        rows = [dict(fixture=osp.basename(p)[:-3], backend=b,
                     max_abs_diff=run(p, b, args.device), **tf32)
                for p in paths for b in available_backends(args.device)]
    if args.json:
        print(json.dumps(rows))
        return
    print(f'{"fixture":<16}{"backend":<11}max abs difference per output '
          f'(tolerance {TOLERANCE:g})')
    for row in rows:
        worst = max(row['max_abs_diff'])
        print(f'{row["fixture"]:<16}{row["backend"]:<11}'
              + ' '.join(f'{d:.1e}' for d in row['max_abs_diff'])
              + ('  ok' if worst < TOLERANCE else '  FAILS'))


if __name__ == '__main__':
    main()
