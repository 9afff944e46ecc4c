"""Test-only: the official RT-DETR v1 (lyuwenyu/RT-DETR, ``rtdetr_pytorch``)
rebuilt from its facts, with its attribute names, so a state dict of this
model has the official checkpoint's keys and its eval forward gives the
official numbers. Only what a key-mapping and parity test needs: BasicBlock
PResNet-vd (R18/R34), HybridEncoder, and RTDETRTransformer in eval mode
(no denoising, no angle head). Written for the tests, not copied.

Official behaviours kept on purpose (they are what parity means):

* the AIFI 2-D sin-cos embedding is built w-major while the tokens are
  h-major, so the "w" channels encode the row: harmless on square maps,
  scrambled on non-square ones;
* no cached ``eval_spatial_size`` anchors / position embeddings: they are
  what the on-the-fly computation gives at that size, and computing them
  lets any input size run.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtdetr_reference_decoder import (MLP, MSDeformableAttention,  # noqa: F401
                                      RTDETRTransformer,
                                      TransformerDecoder,
                                      TransformerDecoderLayer,
                                      inverse_sigmoid)

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)


def _act(name: Optional[str]) -> nn.Module:
    return {None: nn.Identity, 'relu': nn.ReLU, 'silu': nn.SiLU,
            'gelu': nn.GELU}[name]()


class ConvNormLayer(nn.Module):
    """conv (no bias, 'same' padding) -> BN -> activation; both the
    backbone's and the encoder's use these names."""

    def __init__(self, ch_in: int, ch_out: int, kernel_size: int,
                 stride: int, act: Optional[str] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride,
                              (kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(ch_out)
        self.act = _act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


# -- PResNet-vd ---------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 ConvNorm; the first block of every stage has a projection
    shortcut (pool + 1x1 when it strides, a plain 1x1 in the first stage)."""

    def __init__(self, ch_in: int, ch_out: int, stride: int,
                 shortcut: bool) -> None:
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            if stride == 2:
                self.short = nn.Sequential(OrderedDict([
                    ('pool', nn.AvgPool2d(2, 2, 0, ceil_mode=True)),
                    ('conv', ConvNormLayer(ch_in, ch_out, 1, 1))]))
            else:
                self.short = ConvNormLayer(ch_in, ch_out, 1, stride)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, 'relu')
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        short = x if self.shortcut else self.short(x)
        return self.act(self.branch2b(self.branch2a(x)) + short)


class Blocks(nn.Module):

    def __init__(self, ch_in: int, ch_out: int, count: int,
                 stage_num: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            stride = 2 if i == 0 and stage_num != 2 else 1
            self.blocks.append(BasicBlock(ch_in, ch_out, stride, i > 0))
            ch_in = ch_out

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """Deep stem ``conv1.conv1_{1,2,3}``, 3x3/2 max-pool, ``res_layers``."""

    def __init__(self, depth: int = 18,
                 return_idx: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        stem = [(3, 32, 2, 'conv1_1'), (32, 32, 1, 'conv1_2'),
                (32, 64, 1, 'conv1_3')]
        self.conv1 = nn.Sequential(OrderedDict([
            (name, ConvNormLayer(c_in, c_out, 3, s, 'relu'))
            for c_in, c_out, s, name in stem]))
        self.res_layers = nn.ModuleList()
        ch_in = 64
        for i, (count, width) in enumerate(zip(BLOCKS[depth], WIDTHS)):
            self.res_layers.append(Blocks(ch_in, width, count, i + 2))
            ch_in = width
        self.return_idx = list(return_idx)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs


# -- HybridEncoder ------------------------------------------------------------
class RepVggBlock(nn.Module):

    def __init__(self, ch: int, act: str = 'silu') -> None:
        super().__init__()
        self.conv1 = ConvNormLayer(ch, ch, 3, 1)
        self.conv2 = ConvNormLayer(ch, ch, 1, 1)
        self.act = _act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv1(x) + self.conv2(x))


class CSPRepLayer(nn.Module):
    """Two 1x1 branches, RepVGG blocks on one, summed, 1x1 out when the
    hidden width differs."""

    def __init__(self, ch_in: int, ch_out: int, num_blocks: int = 3,
                 expansion: float = 1.0, act: str = 'silu') -> None:
        super().__init__()
        hidden = int(ch_out * expansion)
        self.conv1 = ConvNormLayer(ch_in, hidden, 1, 1, act)
        self.conv2 = ConvNormLayer(ch_in, hidden, 1, 1, act)
        self.bottlenecks = nn.Sequential(
            *[RepVggBlock(hidden, act) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, ch_out, 1, 1, act) \
            if hidden != ch_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class TransformerEncoderLayer(nn.Module):
    """Post-norm; the position embedding goes into queries and keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int,
                 activation: str = 'gelu') -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, 0.0,
                                               batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.activation = _act(activation)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        q = k = src + pos
        src = self.norm1(src + self.self_attn(q, k, src)[0])
        ffn = self.linear2(self.activation(self.linear1(src)))
        return self.norm2(src + ffn)


class TransformerEncoder(nn.Module):

    def __init__(self, layer: nn.Module, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [copy.deepcopy(layer) for _ in range(num_layers)])

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src


def sincos_embedding_official(h: int, w: int, dim: int,
                              temperature: float = 10000.,
                              official: bool = True) -> Tensor:
    """[1, h*w, dim]: sin w, cos w, sin h, cos h (dim/4 each), with the
    grid enumerated w-major as the official code does (see module doc).
    ``official=False``: each h-major token (y, x) gets y in the "w" half
    and x in the "h" half, i.e. the official values on square maps, made
    consistent on non-square ones."""
    if official:
        gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32),
                                torch.arange(h, dtype=torch.float32),
                                indexing='ij')
    else:
        gw, gh = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                torch.arange(w, dtype=torch.float32),
                                indexing='ij')
    quarter = dim // 4
    omega = 1. / temperature ** (torch.arange(quarter,
                                              dtype=torch.float32) / quarter)
    out_w = gw.flatten()[:, None] * omega[None]
    out_h = gh.flatten()[:, None] * omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()],
                     1)[None]


class HybridEncoder(nn.Module):
    """AIFI on ``use_encoder_idx`` levels, then CCFM top-down and
    bottom-up; returns [P3, N4, N5]."""

    def __init__(self, in_channels: Sequence[int] = (128, 256, 512),
                 hidden_dim: int = 256, nhead: int = 8,
                 dim_feedforward: int = 1024,
                 use_encoder_idx: Sequence[int] = (2, ),
                 num_encoder_layers: int = 1, expansion: float = 0.5,
                 depth_mult: float = 1.0, official_pe: bool = True) -> None:
        super().__init__()
        self.official_pe = official_pe
        self.in_channels = list(in_channels)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.input_proj = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1, bias=False),
                          nn.BatchNorm2d(hidden_dim)) for c in in_channels])
        layer = TransformerEncoderLayer(hidden_dim, nhead, dim_feedforward)
        self.encoder = nn.ModuleList([
            TransformerEncoder(layer, num_encoder_layers)
            for _ in self.use_encoder_idx])
        blocks = round(3 * depth_mult)
        n = len(in_channels) - 1
        self.lateral_convs = nn.ModuleList(
            [ConvNormLayer(hidden_dim, hidden_dim, 1, 1, 'silu')
             for _ in range(n)])
        self.fpn_blocks = nn.ModuleList(
            [CSPRepLayer(2 * hidden_dim, hidden_dim, blocks, expansion)
             for _ in range(n)])
        self.downsample_convs = nn.ModuleList(
            [ConvNormLayer(hidden_dim, hidden_dim, 3, 2, 'silu')
             for _ in range(n)])
        self.pan_blocks = nn.ModuleList(
            [CSPRepLayer(2 * hidden_dim, hidden_dim, blocks, expansion)
             for _ in range(n)])

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        for enc, idx in zip(self.encoder, self.use_encoder_idx):
            b, c, h, w = proj[idx].shape
            tokens = proj[idx].flatten(2).transpose(1, 2)
            pos = sincos_embedding_official(h, w, self.hidden_dim,
                                            official=self.official_pe)
            proj[idx] = enc(tokens, pos).transpose(1, 2).reshape(b, c, h, w)
        n = len(proj) - 1
        inner = [proj[-1]]
        for idx in range(n, 0, -1):
            high = self.lateral_convs[n - idx](inner[0])
            inner[0] = high
            low = proj[idx - 1]
            if low.shape[2:] == tuple(2 * s for s in high.shape[2:]):
                up = F.interpolate(high, scale_factor=2., mode='nearest')
            else:  # the official fallback for odd sizes
                up = F.interpolate(high, size=low.shape[2:], mode='bilinear')
            inner.insert(0, self.fpn_blocks[n - idx](torch.cat([up, low], 1)))
        outs = [inner[0]]
        for idx in range(n):
            down = self.downsample_convs[idx](outs[-1])
            outs.append(self.pan_blocks[idx](torch.cat([down, inner[idx + 1]],
                                                       1)))
        return outs


class RTDETR(nn.Module):
    """``backbone`` / ``encoder`` / ``decoder``: the official checkpoint's
    three prefixes."""

    def __init__(self, depth: int = 18, num_classes: int = 80,
                 num_decoder_layers: int = 3,
                 encoder: Optional[dict] = None,
                 decoder: Optional[dict] = None) -> None:
        super().__init__()
        self.backbone = PResNet(depth)
        self.encoder = HybridEncoder(**(encoder or {}))
        self.decoder = RTDETRTransformer(
            num_classes=num_classes, num_decoder_layers=num_decoder_layers,
            **(decoder or {}))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        feats = self.backbone(x)
        enc = self.encoder(feats)
        out = self.decoder(enc)
        out.update(backbone=feats, encoder=enc)
        return out


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0, scale: float = 0.05,
              calibrate: Optional[Tensor] = None) -> None:
    """Every parameter perturbed (the zero-initialised heads and offsets
    too) and every BN given non-trivial running statistics, so a swapped,
    missing or transposed key shows up in the outputs.

    With ``calibrate`` (an input batch for ``model``) the statistics are
    first measured on it, then jittered: activations keep a sane scale
    instead of growing stage by stage, so attention does not saturate
    (a saturated softmax would hide a wrong position embedding).
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if calibrate is not None:
        was_training = model.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batch
        model.train()
        model(calibrate)
        model.train(was_training)
        for m in norms:
            m.momentum = 0.1
    for m in norms:
        if calibrate is None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape,
                                             generator=g) * 0.1)
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape,
                                                 generator=g))
        else:
            # jitter in units of the channel's own spread
            m.running_mean.add_(torch.randn(m.running_mean.shape,
                                            generator=g) * 0.1 *
                                m.running_var.sqrt())
            m.running_var.mul_(0.8 + 0.4 * torch.rand(m.running_var.shape,
                                                      generator=g))
        m.num_batches_tracked.fill_(7)


def official_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """Its state dict as the official training saves it (every BN keeps
    ``num_batches_tracked``; R18/R34 configs do not freeze norms)."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


if __name__ == '__main__':  # the spec's component split, 80 classes
    for depth, layers in ((18, 3), (34, 4)):
        m = RTDETR(depth, num_decoder_layers=layers)
        print(depth, parameter_count(m.backbone), parameter_count(m.encoder),
              parameter_count(m.decoder), parameter_count(m))
