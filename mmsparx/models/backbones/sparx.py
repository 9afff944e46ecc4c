"""SparX-Mamba: Vision Mamba with sparsely cross-connected layers.

Stem -> 4 stages of SparX layers (normal and ganglion) with a
3x3/s2 conv downsample before stages 2-4 -> one LayerNorm2d per output.
Channels first throughout; any input size (the cross scan and DMCA's
reducers take whatever H x W arrives).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmsparx.archs.sparx import (ALIASES, ARCH_DEFAULTS, ARCH_SETTINGS,
                                 resolve_arch, stage_ganglia)
from mmsparx.archs.sparx_connections import STAGE_INPUT, connection_plan
from mmsparx.fileio import CheckpointError
from mmsparx.converters.loading import rename_authors_keys
from mmsparx.converters.sparx_mamba import (convert_sparx_mamba,
                                            is_official_layout)

from mmsparx.models.layers import (DMCA, SS2D, GroupNorm, LayerNorm2d,
                                   SparXBlock)
from mmsparx.models.layers.dmca import SCALE_MODES
from mmsparx.models.backbones.base import FourStageBackbone


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


def init_like_authors(model: nn.Module) -> None:
    """The authors' initialisation (every SparX model of theirs applies it
    at construction): each ``nn.Conv2d`` and ``nn.Linear`` weight
    ~ N(0, 0.02) truncated at +-2, biases 0, norms 1 / 0; the SSM's own
    parameters (x_proj, dt, A, D, held as plain parameters) and the layer
    scales keep theirs. PyTorch's defaults instead give the depthwise 3x3 /
    5x5 convolutions weights of up to +-0.33 / +-0.2, so every
    ``x + DWConv(x)`` adds a random high-pass filter of its input: from
    scratch, the features the detector's RoI head first sees are mostly
    that noise (configs/demo/README.md, the Mask R-CNN diagnosis)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm,
                                 nn.modules.batchnorm._BatchNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def make_out_norm(kind: Optional[str], dim: int) -> nn.Module:
    if kind == 'ln':
        return LayerNorm2d(dim, eps=1e-6)
    if kind == 'gn':
        return GroupNorm(1, dim)
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
        dmca_scale: the ganglion layers' softmax scale: 'input' (1/sqrt(N_r)
            of each input, as the authors' classification and segmentation
            models) or 'learned' (one parameter per ganglion layer, as their
            detection model and its COCO checkpoints).
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained',
            checkpoint=...)`` (authors' checkpoints: see
            ``tools/model_converters/sparx_mamba.py``).
    """

    arch_settings = ARCH_SETTINGS
    arch_defaults = ARCH_DEFAULTS

    def __init__(self, arch: Union[str, dict] = 'tiny',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, drop_path_rate: float = 0.2,
                 out_norm: Optional[str] = 'ln', scan_backend: str = 'auto',
                 dmca_scale: str = 'input',
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if dmca_scale not in SCALE_MODES:
            raise ValueError(f'dmca_scale must be one of {SCALE_MODES}, got '
                             f'{dmca_scale!r}')
        self.dmca_scale = dmca_scale
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
        init_like_authors(self)
        self._freeze_stages()
        # The authors' whole-model files (their COCO / ADE20K checkpoints:
        # ``backbone.*`` in their key names) then load through any loader:
        # mmengine's load_from and load_checkpoint, torch's load_state_dict.
        self._register_load_state_dict_pre_hook(self._authors_keys_hook)

    def _authors_keys_hook(self, state_dict: Dict[str, Tensor], prefix: str,
                           *args) -> None:
        self.adapt_loaded_keys(state_dict, prefix)

    def adapt_loaded_keys(self, state_dict: Dict[str, Tensor],
                          prefix: str = '') -> bool:
        """Rename in place the keys under ``prefix`` when they are in the
        authors' layout; whether they were. A file that cannot be right
        (another variant, learned DMCA scales where none are learned, or
        the reverse) is refused here: mmengine's loader would only warn."""
        return rename_authors_keys(self, state_dict, prefix)

    def ganglia(self, stage: int) -> List[int]:
        """Ganglion layer indices of ``stage`` under this arch."""
        return stage_ganglia(self.arch, stage)

    def _make_stage(self, i: int, rates: List[float], with_cp: bool,
                    scan_backend: str) -> SparXStage:
        arch = self.arch
        dim = arch['channels'][i]
        plan = connection_plan(arch['depths'][i], self.ganglia(i),
                               arch['window'][i], with_stage_input=i > 0)
        blocks = []
        for j, sources in enumerate(plan):
            dmca = None
            if sources is not None:
                if not sources:
                    raise ValueError(f'stage {i + 1} layer {j} is a ganglion '
                                     'layer with nothing connected to it')
                dmca = DMCA(dim, len(sources), self.mixer_width(dim),
                            arch['sr_ratios'][i], arch['attn_groups'],
                            self.dmca_scale)
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
        return convert_sparx_mamba, is_official_layout

    def may_be_missing(self, key: str) -> bool:
        """Learned DMCA scales start from their initial value when the file
        has none (an ImageNet classifier under a detector)."""
        return super().may_be_missing(key) or (
            self.dmca_scale == 'learned' and key.endswith('.in_proj.scale'))

    def check_checkpoint(self, state: Dict[str, Tensor],
                         whole: bool = False) -> None:
        """Learned DMCA scales in the file need ``dmca_scale='learned'``;
        a whole model (``whole``: a detector's or segmentor's file, meant to
        fill every key) without them cannot fill a 'learned' backbone."""
        scales = [k for k in state if k.endswith('.in_proj.scale')]
        if scales and self.dmca_scale != 'learned':
            raise CheckpointError(
                f'the checkpoint holds {len(scales)} learned DMCA softmax '
                f'scales ({scales[0]}, ...), as the authors\' detection '
                "models do; build the backbone with dmca_scale='learned' to "
                'use them (ignoring them changes every ganglion layer)')
        learned = any(k.endswith('.in_proj.scale')
                      for k, _ in self.named_parameters())
        if whole and learned and not scales:
            raise CheckpointError(
                'the checkpoint holds no learned DMCA softmax scales '
                "(op.scale), as the authors' classification and ADE20K "
                "(UperNet) models, but this backbone has dmca_scale='learned'"
                " (their COCO detection model): build it with dmca_scale="
                "'input' for this file, load their COCO file "
                '(maskrcnn_sparx_mamba_*_coco.pth), or start from this file '
                "through the backbone's init_cfg=dict(type='Pretrained', "
                'checkpoint=...), where the scales start from their initial '
                'value')
