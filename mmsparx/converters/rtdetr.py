"""The official RT-DETR v1 checkpoints (lyuwenyu/RT-DETR, ``rtdetr_pytorch``)
-> mmsparx keys.

mmsparx's RT-DETR modules carry the official attribute names, so a whole
model converts by its three prefixes alone (checked key by key and shape
by shape against both models' state dicts, R18 and R34)::

    backbone.*  (PResNet)              -> backbone.*
    encoder.*   (HybridEncoder)        -> neck.*
    decoder.*   (RTDETRTransformer)    -> bbox_head.transformer.*

Official training files hold ``{'model': ..., 'ema': {'module': ...}}``;
the EMA weights are the ones the official evaluation and release use, so
they are taken when present (``weights='model'`` takes the raw ones).

The ImageNet backbone files (``ResNet{18,34}_vd_pretrained_from_paddle``)
are bare PResNet state dicts (``conv1.conv1_1.conv.weight``,
``res_layers.*``); their classifier (``fc.*``) is dropped and reported and
the keys stay bare, as PResNet's ``init_cfg=dict(type='Pretrained')``
reads them. BatchNorms saved without ``num_batches_tracked`` (frozen norms)
get a zero counter, also reported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from mmsparx.converters.detect import (FAMILIES, CheckpointError,
                                       detect_checkpoint, detect_family,
                                       tensors_of)

# official prefix -> mmsparx prefix (a whole RTDETR detector)
PREFIXES: Tuple[Tuple[str, str], ...] = (
    ('backbone.', 'backbone.'),
    ('encoder.', 'neck.'),
    ('decoder.', 'bbox_head.transformer.'),
)
_PART_NAMES = {'backbone.': 'backbone (PResNet)',
               'encoder.': 'encoder (HybridEncoder)',
               'decoder.': 'decoder (RTDETRTransformer)'}
# A bare PResNet (the official ImageNet files): stem and stages.
_PRESNET_KEY = re.compile(r'^(conv1\.conv1_\d|res_layers\.\d+)\.')
# An ImageNet classifier's head: ``fc.*`` (the paddle files) or ``head.*``
# (the official classification model, whose backbone is under backbone.).
_CLASSIFIER_KEY = re.compile(r'^(fc|head)\.')
# Keys only an official detector has (any one decides).
_DETECTOR_KEY = re.compile(
    r'^(encoder\.(input_proj|lateral_convs|fpn_blocks|pan_blocks)\.|'
    r'decoder\.(dec_score_head|enc_output|query_pos_head|decoder\.layers)\.)')
# depth -> (blocks per stage, bottleneck)
PRESNET_DEPTHS = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False),
                  50: ((3, 4, 6, 3), True), 101: ((3, 4, 23, 3), True)}
# (depth, decoder layers) -> the config that builds that official model
CONFIGS = {(18, 3): 'configs/rtdetr/rtdetr_r18vd_72e_coco.py',
           (34, 4): 'configs/rtdetr/rtdetr_r34vd_72e_coco.py'}
# A setting read off the weights -> where a config sets it.
CONFIG_PATHS = {
    'depth': 'model.backbone.depth',
    'neck_in_channels': 'model.neck.in_channels',
    'hidden_dim': 'model.neck.hidden_dim',
    'ffn_dim': 'model.neck.ffn_dim',
    'num_encoder_layers': 'model.neck.num_encoder_layers',
    'expansion': 'model.neck.expansion',
    'depth_mult': 'model.neck.depth_mult',
    'num_classes': 'model.bbox_head.num_classes',
    'embed_dims': 'model.bbox_head.transformer.embed_dims',
    'in_channels': 'model.bbox_head.transformer.in_channels',
    'num_levels': 'model.bbox_head.transformer.num_levels',
    'num_layers': 'model.bbox_head.transformer.num_layers',
    'ffn_dims': 'model.bbox_head.transformer.ffn_dims',
    'num_denoising': 'model.bbox_head.transformer.num_denoising',
}


@dataclass
class Conversion:
    """An official file converted, with what was done to it."""
    state: Dict[str, Tensor]
    kind: str  # 'detector' (backbone/neck/bbox_head keys) or 'backbone'
    source: str  # where in the file the weights were: 'ema.module', ...
    settings: dict  # read off the shapes (:func:`read_settings`)
    dropped: List[str] = field(default_factory=list)  # classifier keys
    filled: List[str] = field(default_factory=list)  # counters added


# -- the file -----------------------------------------------------------------

def unwrap(checkpoint: Mapping, weights: str = 'auto'
           ) -> Tuple[Dict[str, Tensor], str]:
    """(tensors, where they were) of an official file.

    ``weights``: 'auto' (the EMA weights when the file has them, as the
    official evaluation), 'ema' or 'model'.
    """
    if weights not in ('auto', 'ema', 'model'):
        raise ValueError(f"weights must be 'auto', 'ema' or 'model', got "
                         f'{weights!r}')
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'the checkpoint is a {type(checkpoint).__name__}, not a state '
            "dict or a dict holding one under 'model' / 'ema.module' / "
            "'state_dict'.")
    ema = checkpoint.get('ema')
    ema = ema.get('module') if isinstance(ema, Mapping) else None
    model = checkpoint.get('model')
    if weights == 'ema' and not isinstance(ema, Mapping):
        raise CheckpointError("the file holds no EMA weights ('ema': "
                              "{'module': ...}); use weights='model'.")
    if weights == 'model' and not isinstance(model, Mapping):
        raise CheckpointError("the file holds no 'model' entry; use "
                              "weights='ema' (or 'auto').")
    if weights != 'model' and isinstance(ema, Mapping):
        return tensors_of(ema), 'ema.module'
    for key in ('model', 'state_dict'):
        if isinstance(checkpoint.get(key), Mapping):
            return tensors_of(checkpoint[key]), key
    return tensors_of(checkpoint), 'state dict'


def layout(state: Mapping[str, Tensor]) -> Optional[str]:
    """'detector' (official RTDETR), 'backbone' (official bare PResNet),
    'mmsparx' (already converted) or None."""
    if any(k.startswith('bbox_head.transformer.') for k in state):
        return 'mmsparx'
    if any(_DETECTOR_KEY.match(k) for k in state):
        return 'detector'
    if any(_PRESNET_KEY.match(k) for k in _without_backbone_prefix(state)):
        return 'backbone'
    return None


def _without_backbone_prefix(state: Mapping[str, Tensor]
                             ) -> Dict[str, Tensor]:
    """A classifier's keys with ``backbone.`` stripped (the official
    classification model nests PResNet there), or a bare file as it is."""
    if any(k.startswith('backbone.') for k in state):
        return {k[len('backbone.'):] if k.startswith('backbone.') else k: v
                for k, v in state.items()}
    return dict(state)


def is_rtdetr_layout(state: Mapping[str, Tensor]) -> bool:
    """True for an official RT-DETR detector or PResNet backbone file."""
    return layout(state) in ('detector', 'backbone')


def _refuse(state: Dict[str, Tensor], kind: Optional[str]) -> None:
    """Raise for what this converter cannot read, naming what it is."""
    family, family_layout = detect_family(state)
    if kind == 'mmsparx':
        backbone = '' if family is None else \
            f' (its backbone: {detect_checkpoint(state).label})'
        raise CheckpointError(
            'the state dict is already an mmsparx RT-DETR (neck.* / '
            f'bbox_head.transformer.* keys){backbone}: nothing to convert; '
            'load it with load_from=... or --checkpoint.')
    if family is not None:
        info = detect_checkpoint(state)
        tool = FAMILIES[family].converter
        fix = (f'convert it with {tool}' if tool and family_layout ==
               'authors' else f'load it with {info.config()}')
        raise CheckpointError(
            f'the state dict holds a {info.label} model ({family_layout} '
            f'layout), not an official RT-DETR or PResNet: {fix}.')
    if kind is None:
        sample = ', '.join(list(state)[:3]) or 'no tensors'
        raise CheckpointError(
            f'the state dict ({sample}, ...) is not an official RT-DETR '
            '(backbone.* / encoder.* / decoder.* keys) nor an official '
            'PResNet (conv1.conv1_1.*, res_layers.*): give one of those.')


def rename(key: str) -> str:
    """An official detector key -> its mmsparx key."""
    for official, ours in PREFIXES:
        if key.startswith(official):
            return ours + key[len(official):]
    raise KeyError(f'RT-DETR converter: no rule for key {key!r} (expected '
                   'backbone.*, encoder.* or decoder.*)')


def to_official(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """mmsparx RTDETR keys -> the official ones (the inverse of
    :func:`rename`; other keys, e.g. a data preprocessor's, are left out)."""
    out = {}
    for key, value in state.items():
        for official, ours in PREFIXES:
            if key.startswith(ours):
                out[official + key[len(ours):]] = value
                break
    return out


def _fill_counters(state: Dict[str, Tensor]) -> List[str]:
    """Add ``num_batches_tracked`` = 0 to every BatchNorm saved without it
    (frozen norms); the keys added."""
    added = []
    for key in [k for k in state if k.endswith('.running_var')]:
        counter = key[:-len('running_var')] + 'num_batches_tracked'
        if counter not in state:
            state[counter] = torch.tensor(0, dtype=torch.long)
            added.append(counter)
    return added


def convert_rtdetr(checkpoint: Mapping, weights: str = 'auto') -> Conversion:
    """An official RT-DETR or PResNet checkpoint (wrapped or bare) -> keys
    an mmsparx ``RTDETR`` (or ``PResNet``, for a backbone file) loads.

    Raises:
        CheckpointError: another family's file (named, with its converter
            or config), an mmsparx file, an unknown file, or a detector file
            without one of its three parts.
    """
    state, source = unwrap(checkpoint, weights)
    kind = layout(state)
    _refuse(state, kind)
    dropped: List[str] = []
    if kind == 'backbone':
        state = _without_backbone_prefix(state)
        dropped = sorted(k for k in state if not _PRESNET_KEY.match(k))
        unknown = [k for k in dropped if not _CLASSIFIER_KEY.match(k)]
        if unknown:
            raise CheckpointError(
                f'the PResNet state dict has {len(unknown)} keys that are '
                f'neither the backbone nor its classifier (fc.* / head.*): '
                f'{", ".join(unknown[:3])}; is it an official PResNet file?')
        out = {k: v for k, v in state.items() if _PRESNET_KEY.match(k)}
    else:
        stray = [k for k in state
                 if not any(k.startswith(p) for p, _ in PREFIXES)]
        if stray:
            raise CheckpointError(
                f'the RT-DETR state dict has {len(stray)} keys outside '
                f'backbone.* / encoder.* / decoder.* ({", ".join(stray[:3])}'
                '): is it an official RT-DETR checkpoint?')
        absent = [name for prefix, name in _PART_NAMES.items()
                  if not any(k.startswith(prefix) for k in state)]
        if absent:
            raise CheckpointError(
                f'the RT-DETR state dict has no keys of its '
                f'{" and ".join(absent)}: the file is truncated or holds '
                'part of a model; give the whole checkpoint.')
        out = {rename(k): v for k, v in state.items()}
    filled = _fill_counters(out)
    official = out if kind == 'backbone' else to_official(out)
    return Conversion(out, kind, source, read_settings(official), dropped,
                      filled)


# -- settings read off the shapes ---------------------------------------------
def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    """How many ``prefix{i}.`` entries (0 when none)."""
    found = {int(m.group(1)) for m in
             (re.match(re.escape(prefix) + r'(\d+)\.', k) for k in state)
             if m}
    return max(found) + 1 if found else 0


def presnet_depth(state: Mapping[str, Tensor]) -> Optional[int]:
    """18, 34, 50 or 101 from a bare PResNet's block counts, else None."""
    blocks = tuple(_count(state, f'res_layers.{i}.blocks.') for i in
                   range(4))
    bottleneck = any('.branch2c.' in k for k in state)
    for depth, setting in PRESNET_DEPTHS.items():
        if setting == (blocks, bottleneck):
            return depth
    return None


def read_settings(state: Mapping[str, Tensor]) -> dict:
    """The settings an official state dict was made with, from its shapes:
    ``depth`` (PResNet, None for another backbone), the encoder's
    (``neck_in_channels``, ``hidden_dim``, ``ffn_dim``, ...) and the
    decoder's (``num_classes``, ``num_layers``, ...). Keys of parts the
    file lacks are left out."""
    out: dict = {}
    bare = {k[len('backbone.'):]: v for k, v in state.items()
            if k.startswith('backbone.')} or \
        {k: v for k, v in state.items() if _PRESNET_KEY.match(k)}
    if bare:
        out['depth'] = presnet_depth(bare)
    try:
        if any(k.startswith('encoder.') for k in state):
            e = 'encoder.'
            levels = _count(state, e + 'input_proj.')
            out['neck_in_channels'] = [
                state[f'{e}input_proj.{i}.0.weight'].shape[1]
                for i in range(levels)]
            out['hidden_dim'] = state[e + 'input_proj.0.0.weight'].shape[0]
            layers = _count(state, e + 'encoder.0.layers.')
            out['num_encoder_layers'] = layers
            if layers:
                out['ffn_dim'] = state[e + 'encoder.0.layers.0.linear1.'
                                       'weight'].shape[0]
            hidden = state[e + 'fpn_blocks.0.conv1.conv.weight'].shape[0]
            out['expansion'] = hidden / out['hidden_dim']
            out['depth_mult'] = _count(
                state, e + 'fpn_blocks.0.bottlenecks.') / 3
        if any(k.startswith('decoder.') for k in state):
            d = 'decoder.'
            out['num_classes'] = state[d + 'dec_score_head.0.weight'].shape[0]
            out['embed_dims'] = state[d + 'dec_score_head.0.weight'].shape[1]
            levels = _count(state, d + 'input_proj.')
            out['num_levels'] = levels
            out['in_channels'] = [
                state[f'{d}input_proj.{i}.conv.weight'].shape[1]
                for i in range(levels)
                if state[f'{d}input_proj.{i}.conv.weight'].shape[-1] == 1]
            out['num_layers'] = _count(state, d + 'decoder.layers.')
            out['ffn_dims'] = state[d + 'decoder.layers.0.linear1.'
                                    'weight'].shape[0]
            out['num_denoising'] = 100 if d + 'denoising_class_embed.' \
                'weight' in state else 0
    except KeyError as err:
        raise CheckpointError(
            f'the RT-DETR state dict lacks {err.args[0]!r}: the file is '
            'truncated or edited; give the whole checkpoint.') from err
    return out


def describe(settings: Mapping, backbone: Optional[str] = None) -> str:
    """'RT-DETR-R18vd (3 decoder layers, 80 classes)' / 'PResNet-34vd';
    ``backbone`` names a non-PResNet one ('RT-DETR with SpaRTAN (...)')."""
    depth = settings.get('depth')
    if 'num_layers' not in settings:
        return f'PResNet-{depth}vd' if depth else (backbone or
                                                   'an unknown backbone')
    name = f'RT-DETR-R{depth}vd' if depth else \
        f'RT-DETR with {backbone or "a non-PResNet backbone"}'
    return (f'{name} ({settings["num_layers"]} decoder layers, '
            f'{settings["num_classes"]} classes)')


# -- fitting a built model ----------------------------------------------------
def model_settings(model: nn.Module, kind: str) -> dict:
    """:func:`read_settings` of a built mmsparx ``RTDETR`` (or its
    backbone, for ``kind='backbone'``)."""
    state = model.state_dict()
    if kind == 'backbone':
        return read_settings(state)
    return read_settings(to_official(state))


def settings_fixes(file: Mapping, model: Mapping) -> List[str]:
    """``path=value`` config settings that make ``model`` match ``file``."""
    fixes = []
    for key, path in CONFIG_PATHS.items():
        if key in file and key in model and file[key] != model[key] and \
                file[key] is not None:
            fixes.append(f'{path}={file[key]!r}')
    return fixes


def misfit_message(src: str, conversion: Conversion, model: nn.Module,
                   config: str, problems: str) -> str:
    """Why the converted ``src`` does not fit the model of ``config``, and
    the settings (or config) that make it fit."""
    theirs = conversion.settings
    target = model if conversion.kind == 'detector' else model.backbone
    ours = model_settings(target, conversion.kind)
    backbone = type(getattr(model, 'backbone', model)).__name__
    head = (f'{src} holds {describe(theirs)} but {config} builds '
            f'{describe(ours, backbone)}, so it does not load strictly '
            f'({problems})')
    if theirs.get('depth') and backbone != 'PResNet':
        return (head + f': the config\'s backbone is {backbone}; use a '
                f"PResNet config (model.backbone=dict(type='PResNet', "
                f'depth={theirs["depth"]})).')
    fixes = settings_fixes(theirs, ours)
    known = CONFIGS.get((theirs.get('depth'), theirs.get('num_layers')))
    hint = f' (as {known} does)' if known and known != config else ''
    if fixes:
        return head + f': set {", ".join(fixes)}{hint}.'
    return head + ('. The settings read off the file match the config, so '
                   'the file is probably truncated or edited; the key '
                   'lists are in the log.')


def fit_to_model(state: Dict[str, Tensor], model: nn.Module
                 ) -> Dict[str, Tensor]:
    """``state`` without the BatchNorm counters a model with frozen norms
    (``freeze_norm=True``: buffers, no counter) has no place for."""
    own = model.state_dict()
    return {k: v for k, v in state.items()
            if not (k.endswith('.num_batches_tracked') and k not in own and
                    k[:-len('num_batches_tracked')] + 'running_var' in own)}
