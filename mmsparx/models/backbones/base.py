"""What the backbones share: mmdet/mmpretrain's ``frozen_stages`` and
``norm_eval`` (all of them), checkpointed block stages (SpaRTAN, PResNet),
and SparX-Mamba's and SpaRTAN's stem -> (downsample, stage) x 4 -> normed
outputs."""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class FreezeMixin:
    """``frozen_stages`` / ``norm_eval`` as mmdet's backbones: the modules
    :meth:`frozen_modules` names stay in eval mode without gradients, and
    with ``norm_eval`` every BatchNorm keeps its statistics; ``train()``
    re-applies both. Mixed in before ``BaseModule``."""

    frozen_stages: int
    norm_eval: bool

    def frozen_modules(self) -> List[nn.Module]:
        """The stem and the first ``frozen_stages`` stages' modules."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


class BlockStage(nn.Module):
    """The blocks of one stage (keys ``blocks.j``), optionally checkpointed
    one by one."""

    def __init__(self, blocks: Sequence[nn.Module], with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            # Not ``x.requires_grad``: after a frozen stem the input needs no
            # gradient, yet the blocks' weights do and their activations
            # are what checkpointing saves.
            if self.with_cp and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class FourStageBackbone(FreezeMixin, BaseModule):
    """Subclasses build ``stem``, ``downsamples`` (4, the first an
    identity), ``stages`` (4, blocks under ``stages.i.blocks.j``),
    ``out_norms`` (keyed by stage index), set ``arch`` (with ``depths``),
    ``out_indices``, ``frozen_stages``, ``norm_eval``, and name the authors'
    checkpoint layout in :meth:`checkpoint_format`.
    """

    def checkpoint_format(self) -> Tuple[Callable, Callable]:
        """(convert, is_authors_layout) for this family's published files."""
        raise NotImplementedError

    def may_be_missing(self, key: str) -> bool:
        """Keys a pretrained file may lack: the dense output norms (a
        classifier has one at most)."""
        return key.startswith('out_norms.')

    def check_checkpoint(self, state: Dict[str, Tensor],
                         whole: bool = False) -> None:
        """Raise, naming the fix, when a converted file cannot be right for
        this backbone's settings (called before anything is copied);
        ``whole``: the file is a whole model that must fill every key."""

    def init_weights(self) -> None:
        """``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts the
        authors' files as well as mmsparx ones, and reports every key."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from mmsparx.converters.loading import load_backbone
            prefix = cfg.get('prefix', 'backbone.')
            load_backbone(self, cfg['checkpoint'],
                          prefix=prefix if prefix.endswith('.') else
                          prefix + '.')
            self._is_init = True
            return
        super().init_weights()

    def frozen_modules(self) -> List[nn.Module]:
        return [self.stem] + [m for i in range(self.frozen_stages)
                              for m in (self.downsamples[i], self.stages[i])]

    def forward(self, x: Tensor) -> tuple:
        x = self.stem(x)
        outs = []
        for i in range(4):
            x = self.stages[i](self.downsamples[i](x))
            if i in self.out_indices:
                outs.append(self.out_norms[str(i)](x))
        return tuple(outs)

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """(layer id, total) for layer-wise lr decay, as mmpretrain's
        ConvNeXt counts: stem 0, each block its own id, head last."""
        total = sum(self.arch['depths']) + 2
        if not param_name.startswith(prefix):
            return total - 1, total
        name = param_name[len(prefix):]
        if name.startswith('stem'):
            return 0, total
        if name.startswith(('stages', 'downsamples')):
            parts = name.split('.')
            stage = int(parts[1])
            before = sum(self.arch['depths'][:stage])
            if parts[0] == 'downsamples' or parts[2] != 'blocks':
                return before + 1, total
            return before + int(parts[3]) + 1, total
        return total - 1, total
