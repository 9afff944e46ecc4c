"""What SparX-Mamba and SpaRTAN share: stem -> (downsample, stage) x 4 ->
normed outputs, with mmdet/mmpretrain's backbone conventions."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn


class FourStageBackbone(BaseModule):
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
            convert, is_authors_layout = self.checkpoint_format()
            prefix = cfg.get('prefix', 'backbone.')
            load_backbone(self, cfg['checkpoint'], convert, is_authors_layout,
                          prefix=prefix if prefix.endswith('.') else
                          prefix + '.')
            self._is_init = True
            return
        super().init_weights()

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.stem] + [m for i in range(self.frozen_stages)
                                for m in (self.downsamples[i],
                                          self.stages[i])]
        for module in frozen:
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
