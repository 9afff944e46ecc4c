"""SparX-Swin: SparX's connection rules with Swin's window attention.

The paper (section 4.5) replaces SS2D by Swin's shifted-window attention
and keeps everything else; no code or weights were published. Choices made
here (they put the sizes on the paper's 26 M / 88 M, see README):

* window 7, shifted by 3 in every second layer of a stage, relative
  position bias (mmpretrain's ``ShiftWindowMSA``, which also pads any
  input size to whole windows);
* heads: channels / 32 for T (3, 6, 10, 18); for B, whose widths are not
  multiples of 32, heads of about 30 channels (4, 8, 12, 22);
* DPE and layer scale in stages 3-4 stay as in SparX-Mamba; a ganglion
  layer's DMCA fuses its inputs into C channels (the attention's width)
  instead of SS2D's 2C;
* the ConvFFN ratio, which the paper does not give: 3 (T) and 3.375 (B).
  Ratio 4 gives 29.1 M / 5.15 G (T) and 94.1 M / 18.1 G (B), above the
  paper's 26 M / 4.7 G and 88 M / 16.2 G; these ratios put both figures
  within a few per cent (26.1 M / 4.56 G, 87.1 M / 16.8 G).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from mmsparx.archs.sparx import SWIN_ARCH_SETTINGS, SWIN_DEFAULTS
from mmsparx.models.backbones.sparx import SparXMamba


class WindowMixer(nn.Module):
    """Channels-first (shifted) window attention; a ganglion layer's DMCA
    first fuses the connected outputs into the C channels it attends over.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int,
                 shift: bool, in_proj: Optional[nn.Module] = None):
        super().__init__()
        try:
            from mmpretrain.models.utils import ShiftWindowMSA
        except ImportError as err:
            raise ImportError('SparX-Swin uses mmpretrain\'s ShiftWindowMSA: '
                              'pip install mmpretrain (see README)') from err
        self.in_proj = in_proj
        self.attn = ShiftWindowMSA(
            dim, num_heads, window_size,
            shift_size=window_size // 2 if shift else 0, pad_small_map=True)

    def forward(self, x: Tensor, inputs=None) -> Tensor:
        if self.in_proj is not None:
            x = self.in_proj(x, inputs)
        b, c, h, w = x.shape
        y = self.attn(x.flatten(2).transpose(1, 2), (h, w))
        return y.transpose(1, 2).reshape(b, c, h, w)


class SparXSwin(SparXMamba):
    """SparX-Swin backbone (T/B); arguments as :class:`SparXMamba` (arch
    dicts also take ``num_heads`` and ``window_size``)."""

    arch_settings = SWIN_ARCH_SETTINGS
    arch_defaults = SWIN_DEFAULTS

    def mixer_width(self, dim: int) -> int:
        return dim

    def make_mixer(self, stage: int, index: int, dim: int,
                   dmca: Optional[nn.Module], scan_backend: str) -> nn.Module:
        return WindowMixer(dim, self.arch['num_heads'][stage],
                           self.arch['window_size'], shift=index % 2 == 1,
                           in_proj=dmca)

    def init_weights(self) -> None:
        # No authors' checkpoints exist: mmengine's own init applies.
        super(SparXMamba, self).init_weights()
