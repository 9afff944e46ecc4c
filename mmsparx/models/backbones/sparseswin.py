"""SparseSwin: Swin-T stages 1-3 and the SparTa block in place of stage 4.

Two backbones share the body (patch embedding and Swin stages from
mmpretrain, so its Swin-T weights and converters apply; then
:class:`~mmsparx.models.layers.SparTaBlock`):

* :class:`SparseSwin`, the classifier backbone as the authors built it: the
  49 tokens, normalised and averaged (or returned as they are). Its
  spatial-to-token map is learned for one input size (224 -> a 14x14
  stride-16 grid); another size is an error that says what to do.
* :class:`SparseSwinDense`, for mmdet / mmseg: any input size, four NCHW maps
  at strides 4, 8, 16, 32. The converter resizes its spatial map to the grid
  at hand and :class:`~mmsparx.models.layers.TokenToSpace` reads the tokens
  back into a stride-32 map.

Choices where the paper and the public code are silent (README):

* Drop path is linear over the Swin blocks and the SparTa layers together
  (12 in the public setting, as Swin-T's 12 blocks): at 0.2 the Swin blocks
  get the authors' torchvision Swin-T rates; their SparTa layers had none.
  The dense model's ``TokenToSpace`` takes the full rate.
* ``frozen_stages=N`` freezes the patch embedding and the first N stages as
  the outputs see them: a stage includes the patch merging that enters it,
  as in torchvision's (and the authors') Swin, so ``frozen_stages=2`` is the
  authors' ``freeze_12``. ``N=4`` freezes the SparTa block too.
* Windows are padded, never shrunk, on maps smaller than the window
  (``pad_small_map``), as in torchvision's Swin and mmdet's.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmsparx.archs.sparseswin import OUT_TYPES, resolve_arch

from mmsparx.models.layers import SparTaBlock, TokenToSpace
from mmsparx.models.backbones.base import FreezeMixin


def stride16_grid(img_size: Union[int, Sequence[int]], patch_size: int = 4,
                  merges: int = 2) -> Tuple[int, int]:
    """(H, W) of the stride-16 map for an input size: the patch embedding
    and each patch merging pad to whole patches (ceil)."""
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    grid = []
    for side in img_size:
        side = math.ceil(int(side) / patch_size)
        for _ in range(merges):
            side = math.ceil(side / 2)
        grid.append(side)
    return grid[0], grid[1]


def _to_nchw(seq: Tensor, hw: Tuple[int, int]) -> Tensor:
    return seq.transpose(1, 2).reshape(seq.shape[0], -1, *hw).contiguous()


class SparseSwin(FreezeMixin, BaseModule):
    """SparseSwin classifier backbone (Pinasthika et al., 2024).

    Patch embedding -> Swin stages 1-3 (mmpretrain's blocks, window 7) ->
    SparTa block (sparse token converter + ``sparta_depth`` transformer
    layers on ``num_tokens`` tokens) -> LayerNorm per token.

    Args:
        arch: 'tiny'/'t' (the authors' public setting) or a dict with
            ``embed_dims``, ``depths`` and ``num_heads`` (3 Swin stages),
            ``num_tokens`` (t), ``token_dims`` (e), ``sparta_depth``,
            ``sparta_heads`` and optionally ``window_size``, ``patch_size``,
            ``mlp_ratio``, ``qkv_bias``, ``mlp_out_act`` (GELU after the
            SparTa MLP's fc2, as the authors).
        img_size: the input size (int or (H, W)) the spatial-to-token map is
            learned for: 224 gives a 14x14 stride-16 grid (196 positions).
        in_channels: image channels.
        out_type: 'avg_featmap': the normalised tokens averaged, (B, e), as
            the authors' head (use no neck); 'raw': the tokens, (B, t, e).
        resample_tokens: accept other input sizes by resizing the
            spatial-to-token map (see ``SparseTokenConverter``). Off by
            default: the authors' model is defined at one size, and a wrong
            size is more often a pipeline mistake.
        drop_path_rate: stochastic depth, linear over the Swin blocks and
            the SparTa layers.
        attn_drop_rate: attention dropout in the SparTa layers.
        drop_rate: dropout after the SparTa projections and MLP layers.
        frozen_stages: freeze the patch embedding and the first N stages
            (-1: nothing; 0: the patch embedding; 4: the SparTa block too).
            A stage includes the patch merging that enters it.
        norm_eval: keep BatchNorm layers in eval mode. SparseSwin has only
            LayerNorms; accepted so that detection configs carry over.
        with_cp: activation checkpointing per Swin block and SparTa layer.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=...)``: an
            mmsparx SparseSwin file, the authors' state dict, torchvision's
            or mmpretrain's Swin-T (stages 1-3 only; the SparTa block keeps
            its initialisation, as the authors train it), every key reported.
    """

    def __init__(self, arch: Union[str, dict] = 'tiny',
                 img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3, out_type: str = 'avg_featmap',
                 resample_tokens: bool = False, drop_path_rate: float = 0.2,
                 attn_drop_rate: float = 0.0, drop_rate: float = 0.0,
                 frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        family = type(self).__name__
        self.arch = resolve_arch(arch, family)
        if out_type not in OUT_TYPES:
            raise ValueError(f'{family}: out_type must be one of {OUT_TYPES}, '
                             f'got {out_type!r}')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'{family}: frozen_stages must be in -1..4, got '
                             f'{frozen_stages}')
        self.out_type = out_type
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.img_size = ((img_size, img_size) if isinstance(img_size, int)
                         else tuple(int(s) for s in img_size))
        self.token_grid = stride16_grid(self.img_size,
                                        self.arch['patch_size'])
        self.resample_tokens = resample_tokens
        self._build_body(in_channels, drop_path_rate, attn_drop_rate,
                         drop_rate, with_cp)
        self._freeze_stages()

    def _build_body(self, in_channels: int, drop_path_rate: float,
                    attn_drop_rate: float, drop_rate: float,
                    with_cp: bool) -> None:
        try:
            from mmcv.cnn.bricks.transformer import PatchEmbed
            from mmpretrain.models.backbones.swin_transformer import \
                SwinBlockSequence
        except ImportError as err:
            raise ImportError(
                'SparseSwin builds its stages 1-3 from mmpretrain\'s Swin '
                'Transformer: pip install mmpretrain (see README)') from err
        arch = self.arch
        depths, heads = arch['depths'], arch['num_heads']
        rates = torch.linspace(0, drop_path_rate,
                               sum(depths) + arch['sparta_depth']).tolist()
        self.patch_embed = PatchEmbed(
            in_channels=in_channels, embed_dims=arch['embed_dims'],
            conv_type='Conv2d', kernel_size=arch['patch_size'],
            stride=arch['patch_size'], norm_cfg=dict(type='LN'),
            input_size=self.img_size)
        self.stages = nn.ModuleList()
        dims = [arch['embed_dims']]
        for i, (depth, num_heads) in enumerate(zip(depths, heads)):
            stage = SwinBlockSequence(
                embed_dims=dims[-1], depth=depth, num_heads=num_heads,
                window_size=arch['window_size'],
                downsample=i < len(depths) - 1,
                drop_paths=rates[sum(depths[:i]):sum(depths[:i + 1])],
                with_cp=with_cp, pad_small_map=True)
            self.stages.append(stage)
            dims.append(stage.out_channels)
        self.num_features = tuple(dims[:-1]) + (arch['token_dims'], )
        self.sparta = SparTaBlock(
            in_channels=dims[-1], num_tokens=arch['num_tokens'],
            token_dims=arch['token_dims'], depth=arch['sparta_depth'],
            num_heads=arch['sparta_heads'], grid_size=self.token_grid,
            mlp_ratio=arch['mlp_ratio'], qkv_bias=arch['qkv_bias'],
            mlp_out_act=arch['mlp_out_act'], drop_path=rates[sum(depths):],
            attn_drop=attn_drop_rate, drop=drop_rate,
            resample=self.resample_tokens, with_cp=with_cp)
        self.norm = nn.LayerNorm(arch['token_dims'])

    # -- forward ----------------------------------------------------------
    def _swin(self, x: Tensor) -> List[Tuple[Tensor, Tuple[int, int]]]:
        """Stage outputs (B, H*W, C) before their patch merging, with
        their (H, W)."""
        x, hw = self.patch_embed(x)
        feats = []
        for stage in self.stages:
            x, hw = stage(x, hw, do_downsample=False)
            feats.append((x, hw))
            if stage.downsample is not None:
                x, hw = stage.downsample(x, hw)
        return feats

    def _check_grid(self, hw: Tuple[int, int],
                    image_hw: Sequence[int]) -> None:
        if self.resample_tokens or tuple(hw) == self.token_grid:
            return
        raise ValueError(
            f'{type(self).__name__}: the spatial-to-token map is learned for '
            f'{self.img_size[0]}x{self.img_size[1]} inputs (a '
            f'{self.token_grid[0]}x{self.token_grid[1]} stride-16 grid), got '
            f'a {image_hw[0]}x{image_hw[1]} input ({hw[0]}x{hw[1]} grid). '
            f'Resize or crop inputs to {self.img_size[0]}x{self.img_size[1]} '
            f'in the pipeline, build the backbone with img_size='
            f'{tuple(image_hw)} (a new map, trained from scratch), set '
            f'resample_tokens=True (the map is resized), or use '
            f'SparseSwinDense for detection and segmentation.')

    def _tokens(self, feats, image_hw) -> Tuple[Tensor, List[Tensor]]:
        seq, hw = feats[-1]
        self._check_grid(hw, image_hw)
        tokens, maps = self.sparta(_to_nchw(seq, hw))
        return self.norm(tokens), maps

    def forward_with_attention(self, x: Tensor
                               ) -> Tuple[tuple, List[Tensor]]:
        """The outputs of :meth:`forward` and the SparTa attention maps
        (one (B, heads, t, t) per layer), for the attention regulariser."""
        tokens, maps = self._tokens(self._swin(x), x.shape[-2:])
        out = tokens.mean(dim=1) if self.out_type == 'avg_featmap' else tokens
        return (out, ), maps

    def forward(self, x: Tensor) -> tuple:
        return self.forward_with_attention(x)[0]

    # -- weights ----------------------------------------------------------
    def init_weights(self) -> None:
        """Truncated-normal linears and unit LayerNorms (as Swin), then the
        checkpoint of ``init_cfg=dict(type='Pretrained')`` in any layout
        ``mmsparx.converters.sparseswin`` knows, every key reported."""
        from mmengine.model.weight_init import trunc_normal_
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        cfg = self.init_cfg
        pretrained = isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'
        if pretrained:
            self.init_cfg = None  # mmengine's loader knows no converters
        try:
            super().init_weights()  # children: relative position tables
        finally:
            self.init_cfg = cfg
        if pretrained:
            from mmsparx.converters.loading import load_backbone
            prefix = cfg.get('prefix', 'backbone.')
            load_backbone(self, cfg['checkpoint'],
                          prefix=prefix if prefix.endswith('.')
                          else prefix + '.')

    # -- how load_backbone reads a file into this backbone -----------------
    # Swin-T files are what the authors start from: they fill stages 1-3.
    accepted_families = ('SparseSwin', 'Swin')
    # Keys a file holds besides those prepare_pretrained sets aside as
    # unused are refused: no layout of SparseSwin's has them.
    refuses_unexpected_keys = True

    def prepare_pretrained(self, filename: str, state: dict, info,
                           prefix: str):
        """(state, unused keys, keys it may lack) from a file of any
        SparseSwin or Swin-T layout."""
        from mmsparx.converters.sparseswin import pretrained_state
        return pretrained_state(self, filename, state, info, prefix)

    def explain_misfit(self, filename: str, info, problems) -> str:
        """Why a SparseSwin file does not fit: arch or img_size."""
        from mmsparx.converters.sparseswin import misfit_message
        return misfit_message(filename, info, self, problems)

    def new_module_prefixes(self) -> Tuple[str, ...]:
        """Keys a classifier checkpoint cannot hold (dense-only modules)."""
        return ()

    # -- training behaviour -----------------------------------------------
    def _stage_modules(self, index: int) -> List[nn.Module]:
        """Stage ``index`` as the outputs see it: the merging into it, its
        blocks (its SparTa block and head norm for the last one)."""
        modules: List[nn.Module] = []
        if index > 0 and self.stages[index - 1].downsample is not None:
            modules.append(self.stages[index - 1].downsample)
        if index < len(self.stages):
            modules.append(self.stages[index].blocks)
        else:
            modules += [self.sparta, self.norm]
        return modules

    def frozen_modules(self) -> List[nn.Module]:
        frozen = [self.patch_embed]
        for i in range(self.frozen_stages):
            frozen += self._stage_modules(i)
        return frozen

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """(layer id, total) for layer-wise lr decay: patch embedding 0,
        each Swin block and SparTa layer its own id, head last."""
        depths = self.arch['depths']
        swin = sum(depths)
        total = swin + self.arch['sparta_depth'] + 2
        if not param_name.startswith(prefix):
            return total - 1, total
        parts = param_name[len(prefix):].split('.')
        if parts[0] == 'patch_embed':
            return 0, total
        if parts[0] == 'stages':
            stage = int(parts[1])
            if parts[2] == 'downsample':
                return sum(depths[:stage + 1]), total
            return sum(depths[:stage]) + int(parts[3]) + 1, total
        if parts[0] == 'sparta':
            if parts[1] == 'layers':
                return swin + 1 + int(parts[2]), total
            return swin + 1, total
        return total - 1, total


class SparseSwinDense(SparseSwin):
    """SparseSwin for detection and segmentation: any input size, NCHW maps
    at strides 4, 8, 16, 32 with channels (96, 192, 384, e) for 'tiny'.

    How the tokens go back to space: the sparse token converter resizes its
    spatial-to-token map to whatever stride-16 grid arrives (scaled so that
    each token still sums over the whole image), the SparTa layers run on the
    t tokens as in the classifier, and :class:`TokenToSpace` gives each cell
    of the stride-32 grid (Swin's patch merging of the stride-16 map) the
    tokens' answer to its own query by cross-attention, plus an MLP. So no
    size is fixed at construction: ``img_size`` only names the grid the
    spatial map was learned on (the classifier's, to load its weights).

    Args:
        arch, img_size, drop_path_rate, attn_drop_rate, drop_rate,
        frozen_stages, norm_eval, with_cp, init_cfg: as :class:`SparseSwin`
            (a classifier checkpoint loads everything but the new
            ``token_to_space`` and ``out_norms``).
        out_indices: outputs among 0..3 (strides 4, 8, 16, 32), each with its
            own LayerNorm.
    """

    def __init__(self, arch: Union[str, dict] = 'tiny',
                 img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.2, attn_drop_rate: float = 0.0,
                 drop_rate: float = 0.0, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        if not out_indices or any(not -4 <= i < 4 for i in out_indices):
            raise ValueError(f'SparseSwinDense: out_indices must name outputs '
                             f'0..3 (or -4..-1), got {out_indices}')
        self.out_indices = tuple(sorted({i % 4 for i in out_indices}))
        super().__init__(arch, img_size, in_channels, 'raw',
                         resample_tokens=True, drop_path_rate=drop_path_rate,
                         attn_drop_rate=attn_drop_rate, drop_rate=drop_rate,
                         frozen_stages=frozen_stages, norm_eval=norm_eval,
                         with_cp=with_cp, init_cfg=init_cfg)

    def _build_body(self, in_channels: int, drop_path_rate: float,
                    attn_drop_rate: float, drop_rate: float,
                    with_cp: bool) -> None:
        super()._build_body(in_channels, drop_path_rate, attn_drop_rate,
                            drop_rate, with_cp)
        arch = self.arch
        self.token_to_space = TokenToSpace(
            self.num_features[2], arch['token_dims'], arch['sparta_heads'],
            arch['mlp_ratio'], drop_path=drop_path_rate)
        self.out_norms = nn.ModuleDict({
            str(i): nn.LayerNorm(self.num_features[i])
            for i in self.out_indices})

    def new_module_prefixes(self) -> Tuple[str, ...]:
        return ('token_to_space.', 'out_norms.')

    def _stage_modules(self, index: int) -> List[nn.Module]:
        modules = super()._stage_modules(index)
        if index == len(self.stages):
            modules.append(self.token_to_space)
        if str(index) in self.out_norms:
            modules.append(self.out_norms[str(index)])
        return modules

    def forward_with_attention(self, x: Tensor
                               ) -> Tuple[tuple, List[Tensor]]:
        feats = self._swin(x)
        outs = [_to_nchw(self.out_norms[str(i)](feats[i][0]), feats[i][1])
                for i in self.out_indices if i < 3]
        maps: List[Tensor] = []
        if 3 in self.out_indices:
            tokens, maps = self._tokens(feats, x.shape[-2:])
            seq, hw = feats[-1]
            cells, cells_hw = self.token_to_space(seq, hw, tokens)
            outs.append(_to_nchw(self.out_norms['3'](cells), cells_hw))
        return tuple(outs), maps
