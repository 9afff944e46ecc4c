"""SparX-Mamba: Vision Mamba with sparsely cross-connected layers.

Stem -> 4 stages of SparX layers (normal and ganglion, spec 1.2/1.3) with a
3x3/s2 conv downsample before stages 2-4 -> one LayerNorm2d per output.
Channels first throughout; any input size (the cross scan and DMCA's
reducers take whatever H x W arrives).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..layers import DMCA, SS2D, LayerNorm2d, SparXBlock
from .base import FourStageBackbone
from .sparx_connections import STAGE_INPUT, connection_plan, ganglion_indices

# Variants as data (spec 1.1). ganglion_start: first index a ganglion layer
# may take in each stage (None: normal layers only).
ARCH_SETTINGS: Dict[str, dict] = {
    'tiny': dict(depths=(2, 2, 7, 2), channels=(96, 192, 320, 512),
                 stem='v1', strides=(1, 1, 2, 1),
                 ganglion_start=(None, 1, 0, 0)),
    'small': dict(depths=(2, 2, 17, 2), channels=(96, 192, 328, 544),
                  stem='v2', strides=(1, 1, 3, 1),
                  ganglion_start=(None, 1, 0, 0)),
    'base': dict(depths=(2, 2, 21, 3), channels=(120, 240, 396, 636),
                 stem='v2', strides=(1, 1, 3, 2),
                 ganglion_start=(None, 1, 0, 1)),
}
ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base'}
ARCH_DEFAULTS = dict(window=3, sr_ratios=(8, 4, 2, 1),
                     layer_scale=(False, False, True, True), d_state=1,
                     ssm_ratio=2.0, mlp_ratio=4.0, attn_groups=4)
REQUIRED_KEYS = ('depths', 'channels', 'stem', 'strides', 'ganglion_start')


def resolve_arch(arch: Union[str, dict], settings: Dict[str, dict],
                 aliases: Dict[str, str], defaults: dict,
                 family: str) -> dict:
    """A named variant or a custom dict, checked, with defaults filled."""
    if isinstance(arch, str):
        name = aliases.get(arch.lower(), arch.lower())
        if name not in settings:
            valid = sorted(set(settings) | set(aliases))
            raise KeyError(f'{family}: unknown arch {arch!r}; valid names: '
                           f'{valid}, or a dict with keys {REQUIRED_KEYS}')
        arch = settings[name]
    missing = [k for k in REQUIRED_KEYS if k not in arch]
    if missing:
        raise KeyError(f'{family}: custom arch lacks {missing}')
    merged = dict(copy.deepcopy(defaults), **copy.deepcopy(dict(arch)))
    for key in ('depths', 'channels', 'strides', 'ganglion_start',
                'sr_ratios', 'layer_scale'):
        if len(merged[key]) != 4:
            raise ValueError(f'{family}: arch[{key!r}] needs 4 entries (one '
                             f'per stage), got {merged[key]}')
    return merged


def make_stem(out_dim: int, version: str) -> nn.Sequential:
    """v1: conv s2 -> C/2, BN, GELU, conv s2 -> C, BN; v2 adds a C/2 conv."""
    half = out_dim // 2
    layers: List[nn.Module] = [
        nn.Conv2d(3, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half),
        nn.GELU()]
    if version == 'v2':
        layers += [nn.Conv2d(half, half, 3, 1, 1, bias=False),
                   nn.BatchNorm2d(half), nn.GELU()]
    elif version != 'v1':
        raise ValueError(f"stem must be 'v1' or 'v2', got {version!r}")
    layers += [nn.Conv2d(half, out_dim, 3, 2, 1, bias=False),
               nn.BatchNorm2d(out_dim)]
    return nn.Sequential(*layers)


def make_out_norm(kind: Optional[str], dim: int) -> nn.Module:
    if kind == 'ln':
        return LayerNorm2d(dim, eps=1e-6)
    if kind == 'gn':
        return nn.GroupNorm(1, dim)
    return nn.Identity()


class SparXStage(nn.Module):
    """The layers of one stage and the outputs each ganglion layer reads."""

    def __init__(self, blocks: Sequence[SparXBlock],
                 plan: Sequence[Optional[tuple]], with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.plan = list(plan)
        self.with_cp = with_cp

    def _run(self, block: nn.Module, x: Tensor, inputs) -> Tensor:
        if self.with_cp and x.requires_grad:
            if inputs is None:
                return checkpoint(block, x, use_reentrant=False)
            return checkpoint(lambda y, *ins: block(y, ins), x, *inputs,
                              use_reentrant=False)
        return block(x, inputs)

    def forward(self, x: Tensor) -> Tensor:
        saved = {STAGE_INPUT: x}
        for index, (block, sources) in enumerate(zip(self.blocks, self.plan)):
            inputs = None if sources is None else [saved[s] for s in sources]
            x = self._run(block, x, inputs)
            saved[('o' if sources is None else 'g') + str(index)] = x
        return x


class SparXMamba(FourStageBackbone):
    """SparX-Mamba backbone (T/S/B) for classification and dense tasks.

    Subclasses change the token mixer (``make_mixer``, ``mixer_width``) and
    the variant tables (``arch_settings``, ``arch_defaults``).

    Args:
        arch: 'tiny'/'t', 'small'/'s', 'base'/'b', or a dict with
            ``depths``, ``channels``, ``stem``, ``strides`` (S per stage),
            ``ganglion_start`` and optionally ``window`` (M), ``sr_ratios``,
            ``layer_scale``, ``d_state``, ``ssm_ratio``, ``mlp_ratio``,
            ``ganglia`` (explicit ganglion indices per stage).
        out_indices: stages whose outputs are returned (NCHW, strides
            4, 8, 16, 32).
        frozen_stages: freeze the stem and the first N stages (-1: none).
        norm_eval: keep BatchNorm layers in eval mode while training.
        with_cp: activation checkpointing per layer.
        drop_path_rate: stochastic depth, linear over all layers.
        out_norm: the norm on each output: 'ln' (LayerNorm2d, eps 1e-6, as
            the authors' dense models), 'gn' (GroupNorm with 1 group, the
            authors' classifier norm; use with a pooling neck and a linear
            head) or None.
        scan_backend: 'auto' or a backend of ``mmsparx.ops``.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained',
            checkpoint=...)`` (authors' checkpoints: see
            ``tools/convert/sparx_mamba.py``).
    """

    arch_settings = ARCH_SETTINGS
    arch_defaults = ARCH_DEFAULTS

    def __init__(self, arch: Union[str, dict] = 'tiny',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, drop_path_rate: float = 0.2,
                 out_norm: Optional[str] = 'ln', scan_backend: str = 'auto',
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = resolve_arch(arch, self.arch_settings, ALIASES,
                                 self.arch_defaults, type(self).__name__)
        depths, channels = self.arch['depths'], self.arch['channels']
        if not out_indices or any(not -4 <= i < 4 for i in out_indices):
            raise ValueError(f'out_indices must name stages 0..3 (or -4..-1)'
                             f', got {out_indices}')
        out_indices = tuple(sorted(i % 4 for i in out_indices))
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in -1..4, got '
                             f'{frozen_stages}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.channels = tuple(channels)
        self.stem = make_stem(channels[0], self.arch['stem'])
        self.downsamples = nn.ModuleList([nn.Identity()] + [
            nn.Sequential(nn.Conv2d(channels[i - 1], channels[i], 3, 2, 1,
                                    bias=False), nn.BatchNorm2d(channels[i]))
            for i in range(1, 4)])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(4):
            self.stages.append(self._make_stage(
                i, rates[sum(depths[:i]):sum(depths[:i + 1])], with_cp,
                scan_backend))
        if out_norm not in ('ln', 'gn', None):
            raise ValueError(f"out_norm must be 'ln', 'gn' or None, got "
                             f'{out_norm!r}')
        self.out_norms = nn.ModuleDict({
            str(i): make_out_norm(out_norm, channels[i])
            for i in out_indices})
        self._freeze_stages()

    def ganglia(self, stage: int) -> List[int]:
        """Ganglion layer indices of ``stage`` under this arch."""
        explicit = self.arch.get('ganglia')
        if explicit is not None:
            return sorted(explicit[stage])
        return ganglion_indices(self.arch['depths'][stage],
                                self.arch['strides'][stage],
                                self.arch['ganglion_start'][stage])

    def _make_stage(self, i: int, rates: List[float], with_cp: bool,
                    scan_backend: str) -> SparXStage:
        arch = self.arch
        dim = arch['channels'][i]
        plan = connection_plan(arch['depths'][i], self.ganglia(i),
                               arch['window'], with_stage_input=i > 0)
        blocks = []
        for j, sources in enumerate(plan):
            dmca = None
            if sources is not None:
                if not sources:
                    raise ValueError(f'stage {i + 1} layer {j} is a ganglion '
                                     'layer with nothing connected to it')
                dmca = DMCA(dim, len(sources), self.mixer_width(dim),
                            arch['sr_ratios'][i], arch['attn_groups'])
            mixer = self.make_mixer(i, j, dim, dmca, scan_backend)
            blocks.append(SparXBlock(dim, mixer, arch['mlp_ratio'],
                                     arch['layer_scale'][i], rates[j]))
        return SparXStage(blocks, plan, with_cp)

    def mixer_width(self, dim: int) -> int:
        """Channels DMCA hands to the token mixer: SS2D's inner width."""
        return int(self.arch['ssm_ratio'] * dim)

    def make_mixer(self, stage: int, index: int, dim: int,
                   dmca: Optional[nn.Module], scan_backend: str) -> nn.Module:
        """The token mixer of one layer; ``dmca`` for ganglion layers."""
        return SS2D(dim, d_state=self.arch['d_state'],
                    ssm_ratio=self.arch['ssm_ratio'], in_proj=dmca,
                    scan_backend=scan_backend)

    def checkpoint_format(self):  # see FourStageBackbone
        from mmsparx.converters import convert_sparx_mamba, is_official_layout
        return convert_sparx_mamba, is_official_layout
