"""PResNet: the ResNet-vd backbones of RT-DETR (R18vd, R34vd, R50vd, R101vd).

Deep stem (three 3x3 ConvBN-ReLU, 3 -> 32 -> 32 -> 64, the first with
stride 2) -> 3x3/s2 max-pool -> 4 stages of basic (18/34) or bottleneck
(50/101) blocks; outputs at strides 4, 8, 16, 32.

Two facts make it differ from mmdet's ``ResNetV1d``, so both are kept:

* the first block of EVERY stage has a 1x1 ConvBN shortcut, even stage 0's
  64 -> 64 basic block (R18vd: 11,199,968 parameters, ResNetV1d 11,195,744);
* stride-2 shortcuts are a 2x2 average pool (ceil mode, so odd maps keep
  their last row) then the 1x1 ConvBN.

Submodules carry the official names (``conv1.conv1_1.conv``,
``res_layers.{i}.blocks.{j}.branch2a.norm``, ``...short.pool``/``short.conv``),
so the authors' state dicts load without renaming. Torch and mmengine only:
it is registered in every toolbox.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmsparx.archs.presnet import STAGE_STRIDES, resolve_depth

from mmsparx.models.layers.conv_norm import ConvNormAct
from mmsparx.models.backbones.base import BlockStage, FreezeMixin


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed affine and statistics, all buffers (the official
    ``freeze_norm``): ``(x - mean) / sqrt(var + eps) * weight + bias``."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer('weight', torch.ones(num_features))
        self.register_buffer('bias', torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, bn: nn.modules.batchnorm._BatchNorm
                        ) -> 'FrozenBatchNorm2d':
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A file written with trainable BN has this counter; it means nothing
        # here. torch's load_state_dict passes a copy, so deleting is local.
        state_dict.pop(prefix + 'num_batches_tracked', None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced (in place, recursively) by a
    :class:`FrozenBatchNorm2d` holding the same values."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return FrozenBatchNorm2d.from_batch_norm(module)
    for name, child in module.named_children():
        frozen = freeze_batch_norms(child)
        if frozen is not child:
            setattr(module, name, frozen)
    return module


def make_shortcut(in_channels: int, out_channels: int, stride: int,
                  avg_down: bool) -> nn.Module:
    """The projection shortcut: 1x1 ConvBN, after a 2x2 average pool when
    ``avg_down`` and the block downsamples (variant d)."""
    if stride == 1 or not avg_down:
        return ConvNormAct(in_channels, out_channels, 1, stride)
    # ceil_mode: an odd map's last row/column is pooled alone, which keeps
    # the shortcut's size equal to the 3x3/s2 branch's ceil(n / 2).
    return nn.Sequential(OrderedDict(
        pool=nn.AvgPool2d(2, 2, 0, ceil_mode=True),
        conv=ConvNormAct(in_channels, out_channels, 1, 1)))


class BasicBlock(nn.Module):
    """Two 3x3 ConvBN (stride on the first), residual add, ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int,
                 project: bool, avg_down: bool = True,
                 stride_on_3x3: bool = True):
        super().__init__()
        del stride_on_3x3  # one signature for both blocks; no 1x1 here
        self.branch2a = ConvNormAct(in_channels, channels, 3, stride,
                                    act='relu')
        self.branch2b = ConvNormAct(channels, channels, 3, 1)
        self.short = (make_shortcut(in_channels, channels, stride, avg_down)
                      if project else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch2b(self.branch2a(x)) + self.short(x))


class BottleNeck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 width) ConvBN, residual add, ReLU; the stride
    sits on the 3x3 (variants b, c, d) or on the first 1x1 (variant a)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int,
                 project: bool, avg_down: bool = True,
                 stride_on_3x3: bool = True):
        super().__init__()
        stride_1x1, stride_3x3 = (1, stride) if stride_on_3x3 else (stride, 1)
        out_channels = channels * self.expansion
        self.branch2a = ConvNormAct(in_channels, channels, 1, stride_1x1,
                                    act='relu')
        self.branch2b = ConvNormAct(channels, channels, 3, stride_3x3,
                                    act='relu')
        self.branch2c = ConvNormAct(channels, out_channels, 1, 1)
        self.short = (make_shortcut(in_channels, out_channels, stride,
                                    avg_down)
                      if project else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.act(out + self.short(x))


BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleNeck}


class PResNetStage(BlockStage):
    """The blocks of one stage (official ``Blocks``: key ``blocks.j``); the
    first projects its shortcut, and downsamples unless it is stage 0."""

    def __init__(self, block: type, in_channels: int, channels: int,
                 depth: int, stride: int, avg_down: bool,
                 stride_on_3x3: bool, with_cp: bool = False):
        blocks = []
        for j in range(depth):
            blocks.append(block(in_channels, channels,
                                stride if j == 0 else 1, j == 0, avg_down,
                                stride_on_3x3))
            in_channels = channels * block.expansion
        super().__init__(blocks, with_cp)


class PResNet(FreezeMixin, BaseModule):
    """RT-DETR's PResNet (ResNet-vd) backbone.

    Args:
        depth: 18, 34 (basic blocks) or 50, 101 (bottlenecks).
        variant: 'd' (RT-DETR; deep stem, average-pool shortcuts), or the
            official code's 'a', 'b', 'c'.
        out_indices: stages whose outputs are returned, NCHW at strides
            4, 8, 16, 32 (channels 64, 128, 256, 512; x4 for 50/101);
            negative indices count from the last stage. RT-DETR: (1, 2, 3).
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and
            stages < k: ``requires_grad=False`` and BN in eval mode,
            re-applied in ``train()``.
        norm_eval: keep every BatchNorm in eval mode while training.
        freeze_norm: replace every BatchNorm by :class:`FrozenBatchNorm2d`
            (buffers, not parameters; eps 1e-5), as the official
            ``freeze_norm=True`` (RT-DETR's R50/R101 configs).
        with_cp: activation checkpointing per block (BN running statistics
            are then updated twice per step, as in mmdet's ResNet).
        init_cfg: mmengine init config; ``dict(type='Pretrained',
            checkpoint=...)`` loads the authors' backbone files as they are
            (same keys). None keeps PyTorch's default init, as the official.
    """

    def __init__(self, depth: int = 18, variant: str = 'd',
                 out_indices: Sequence[int] = (1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 freeze_norm: bool = False, with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = resolve_depth(depth, variant)
        self.depth, self.variant = depth, variant
        if (not out_indices
                or any(not isinstance(i, int) or not -4 <= i < 4
                       for i in out_indices)):
            raise ValueError(f'PResNet: out_indices must name stages 0..3 '
                             f'(or -4..-1), got {out_indices}')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'PResNet: frozen_stages must be in -1..4, got '
                             f'{frozen_stages}')
        self.out_indices = tuple(sorted({i % 4 for i in out_indices}))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.out_channels = [self.arch['out_channels'][i]
                             for i in self.out_indices]
        self.out_strides = [STAGE_STRIDES[i] for i in self.out_indices]

        self.conv1 = nn.Sequential(OrderedDict(
            (name, ConvNormAct(c_in, c_out, k, s, act='relu'))
            for name, c_in, c_out, k, s in self.arch['stem']))
        block = BLOCKS[self.arch['block']]
        in_channels = self.arch['stem'][-1][2]
        self.res_layers = nn.ModuleList()
        for i, (channels, n) in enumerate(zip(self.arch['channels'],
                                              self.arch['depths'])):
            self.res_layers.append(PResNetStage(
                block, in_channels, channels, n, 1 if i == 0 else 2,
                self.arch['avg_down'], self.arch['stride_on_3x3'], with_cp))
            in_channels = self.arch['out_channels'][i]
        if freeze_norm:
            freeze_batch_norms(self)
        self._freeze_stages()

    def frozen_modules(self) -> List[nn.Module]:
        return [self.conv1, *self.res_layers[:self.frozen_stages]]

    def forward(self, x: Tensor) -> tuple:
        """x: [B, 3, H, W] -> one [B, C_i, ceil(H / s_i), ceil(W / s_i)] per
        ``out_indices`` entry (s = 4, 8, 16, 32)."""
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
