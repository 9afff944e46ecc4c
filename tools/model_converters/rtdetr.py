"""Convert an official RT-DETR (or PResNet ImageNet) checkpoint to mmsparx.

    python tools/model_converters/rtdetr.py rtdetr_r18vd_dec3_6x_coco_from_paddle.pth checkpoints/rtdetr_r18vd_coco.pth --config configs/rtdetr/rtdetr_r18vd_72e_coco.py
    python tools/model_converters/rtdetr.py ResNet18_vd_pretrained_from_paddle.pth checkpoints/presnet18vd_in1k.pth

A whole official model (``{'model': ..., 'ema': {'module': ...}}`` or a
bare state dict; ``backbone.*``, ``encoder.*``, ``decoder.*``) becomes an
mmdet ``RTDETR`` state dict (``backbone.*``, ``neck.*``,
``bbox_head.transformer.*``), the EMA weights by default (``--weights``).
A bare PResNet file keeps its keys (PResNet's ``init_cfg=dict(type=
'Pretrained')`` reads them) without its ImageNet ``fc.*``.

Before anything is written the result is loaded strictly: into the model
of ``--config`` (its backbone, for a backbone file), or else into the
modules built from the settings read off the file's shapes. A file that
does not fit the config is refused with the settings (or config) that fit
it, e.g. an R34 file given with the R18 config. The output is written to
a temporary file and renamed, never over the input. A missing, truncated
or wrong file (another family, an mmsparx file) is reported in one
paragraph with the fix (exit status 1).
"""
import argparse
import logging
import os.path as osp
import sys
from typing import Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from torch import nn  # noqa: E402

from mmsparx.fileio import fit_problems  # noqa: E402
from mmsparx.fileio import (CheckpointError,  # noqa: E402
                            save_checkpoint_file)
from mmsparx.converters.loading import (CLI_ERRORS,  # noqa: E402
                                        check_paths, exit_with,
                                        load_strictly,
                                        read_checkpoint_file, summarize)
from mmsparx.converters.rtdetr import (Conversion,  # noqa: E402
                                       convert_rtdetr, describe,
                                       fit_to_model, misfit_message)


def build_from_config(config: str) -> nn.Module:
    """The config's model as the Runner builds it, without loading its
    pretrained backbone."""
    from mmengine.config import Config

    from mmsparx.apis import build_model
    from mmsparx.deploy import restored_default_scope
    cfg = Config.fromfile(config)
    if cfg.get('default_scope') is None:
        cfg.default_scope = 'mmdet'  # RT-DETR is an mmdet model
    with restored_default_scope():
        return build_model(cfg, pretrained=False)


def build_from_settings(conversion: Conversion) -> nn.Module:
    """Modules shaped as the file says (no config given): PResNet, and for
    a detector file the HybridEncoder and RTDETRTransformer, under the
    detector's attribute names."""
    from mmsparx.models.backbones import PResNet
    settings = conversion.settings
    if settings.get('depth') is None:
        raise CheckpointError(
            'the backbone is not a PResNet-18/34/50/101, so no model can be '
            'built from the file alone: give --config with its backbone.')
    if conversion.kind == 'backbone':
        return PResNet(settings['depth'])
    from mmsparx.models.necks.hybrid_encoder import HybridEncoder
    from mmsparx.models.layers.transformer.rtdetr_transformer import \
        RTDETRTransformer
    model = nn.Module()
    model.backbone = PResNet(settings['depth'])
    model.neck = HybridEncoder(
        in_channels=settings['neck_in_channels'],
        hidden_dim=settings['hidden_dim'],
        ffn_dim=settings.get('ffn_dim', 1024),
        num_encoder_layers=settings['num_encoder_layers'],
        expansion=settings['expansion'], depth_mult=settings['depth_mult'])
    model.bbox_head = nn.Module()
    model.bbox_head.transformer = RTDETRTransformer(
        num_classes=settings['num_classes'],
        embed_dims=settings['embed_dims'],
        in_channels=settings['in_channels'],
        num_levels=settings['num_levels'], num_layers=settings['num_layers'],
        ffn_dims=settings['ffn_dims'],
        num_denoising=settings['num_denoising'])
    return model


def check(conversion: Conversion, src: str, config: Optional[str]) -> None:
    """Load the result strictly into the config's model (or the modules
    the file's shapes call for); refuse with the fix if it does not fit."""
    if config is None:
        load_strictly(build_from_settings(conversion), conversion.state, src)
        return
    model = build_from_config(config)
    target = model if conversion.kind == 'detector' else model.backbone
    state = fit_to_model(conversion.state, target)
    problems = fit_problems(target, state)
    if not problems.ok:
        from mmengine.logging import print_log
        print_log(f'{src} into {config}: {problems.summary(limit=None)}',
                  logger='current', level=logging.WARNING)
        raise CheckpointError(misfit_message(
            src, conversion, model, config, summarize(problems)))
    load_strictly(target, state, src)
    conversion.state = state


def convert_file(src: str, dst: str, config: Optional[str] = None,
                 weights: str = 'auto') -> Conversion:
    """Convert ``src`` into ``dst`` after the strict check; the conversion.
    """
    check_paths(src, dst)
    if osp.exists(dst) and osp.samefile(src, dst):  # a link to the input
        raise CheckpointError(f'refusing to overwrite the input checkpoint '
                              f'{src} ({dst} is the same file); give '
                              'another output path')
    if config is not None and not osp.isfile(config):
        raise CheckpointError(f'config {config} does not exist: give the '
                              'path of an RT-DETR config.')
    checkpoint = read_checkpoint_file(src)
    try:
        conversion = convert_rtdetr(checkpoint, weights)
    except CheckpointError as err:  # its messages say "the state dict"
        raise CheckpointError(f'{src}: {err}') from err
    check(conversion, src, config)
    meta = {'converted_from': osp.basename(src), 'weights': conversion.source,
            'kind': conversion.kind, 'settings': conversion.settings}
    save_checkpoint_file({'state_dict': conversion.state, 'meta': meta}, dst)
    return conversion


def main(argv=None) -> None:
    """Convert; a bad input exits with status 1 and one paragraph on
    stderr (a traceback only for a bug)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help='official RT-DETR or PResNet checkpoint')
    parser.add_argument('dst', help='output path (.pth)')
    parser.add_argument('--config', help='mmsparx RT-DETR config whose '
                        'model must load the result strictly')
    parser.add_argument('--weights', choices=('auto', 'ema', 'model'),
                        default='auto', help="'auto': the EMA weights when "
                        'the file has them (what the official evaluation '
                        'uses), else the model weights')
    args = parser.parse_args(argv)
    try:
        conversion = convert_file(args.src, args.dst, args.config,
                                  args.weights)
    except CLI_ERRORS as err:
        exit_with(parser.prog, err)
    notes = [f'weights: {conversion.source}']
    if conversion.dropped:
        notes.append(f'dropped {len(conversion.dropped)} classifier keys '
                     f'({", ".join(conversion.dropped)})')
    if conversion.filled:
        notes.append(f'added {len(conversion.filled)} zero BatchNorm '
                     'counters (num_batches_tracked)')
    checked = args.config or 'modules built from the file\'s shapes'
    print(f'converted {describe(conversion.settings)} '
          f'({len(conversion.state)} keys; {"; ".join(notes)}); strict load '
          f'into {checked} passed -> {args.dst}')


if __name__ == '__main__':
    main()
