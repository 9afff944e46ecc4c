"""What an exported graph computes, per toolbox, as modules to trace.

Every graph takes the tensor the config's data preprocessor would give the
model (RGB, normalised with its mean / std; for RT-DETR that is the image
in [0, 1], as the official export takes it), so a deployment keeps its own
resize and normalisation, as mmdeploy's graphs do. Batch size stays
dynamic: nothing below loops over images or reads the batch as a number.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

from torch import Tensor, nn

# Per task: (input names, output names, what each output holds).
SIGNATURES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    'classification': (('images', ), ('logits', )),
    'detection': (('images', 'orig_target_sizes'),
                  ('labels', 'boxes', 'scores')),
    'segmentation-logits': (('images', ), ('seg_logits', )),
    'segmentation-argmax': (('images', ), ('seg_map', )),
}

SCOPE_TASKS = {'mmpretrain': 'classification', 'mmdet': 'detection',
               'mmseg': 'segmentation'}


class ClassifierExport(nn.Module):
    """images [N, 3, H, W] -> class logits [N, classes] (before softmax)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, mode='tensor')


class RTDETRExport(nn.Module):
    """RT-DETR end to end, as the official ``export_onnx.py`` deploys it.

    Inputs: images [N, 3, H, W] in [0, 1] (resized to the network size) and
    orig_target_sizes [N, 2] holding each original image's (width, height),
    the official order. Outputs: labels [N, K] (0-based, as mmdet's datasets
    number the classes), boxes [N, K, 4] (xyxy in original pixels) and
    scores [N, K] (sigmoid, descending) of the top K = ``max_per_img`` over
    queries x classes; no NMS.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from mmsparx.models.detectors.rtdetr import RTDETR
        if not isinstance(model, RTDETR):
            raise TypeError(
                f'ONNX export of mmdet configs covers RT-DETR (end to end, '
                f'with its top-k post-processing); this config builds '
                f'{type(model).__name__}. Mask R-CNN and other mmdet '
                f'detectors export through mmdeploy (README, "Deployment").')
        self.model = model

    def forward(self, images: Tensor,
                orig_target_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        from mmsparx.models.dense_heads.rtdetr_head import top_detections
        head = self.model.bbox_head
        outputs = head.transformer(self.model.extract_feat(images))
        logits, boxes = outputs['logits'][-1], outputs['boxes'][-1]
        count = min(head.max_per_img, logits.shape[1] * logits.shape[2])
        scores, labels, boxes = top_detections(logits, boxes, count)
        scale = orig_target_sizes.to(boxes.dtype).repeat(1, 2).unsqueeze(1)
        return labels, boxes * scale, scores


class SegmentorExport(nn.Module):
    """mmseg's ``encode_decode`` (whole image): images [N, 3, H, W] ->
    per-pixel class logits [N, K, H, W] or the argmax map [N, H, W]."""

    def __init__(self, model: nn.Module, shape: Sequence[int],
                 argmax: bool = False) -> None:
        super().__init__()
        self.model, self.argmax = model, argmax
        size = (int(shape[0]), int(shape[1]))
        # encode_decode resizes its logits to the first image's img_shape.
        self.metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)]

    def forward(self, images: Tensor) -> Tensor:
        logits = self.model.encode_decode(images, self.metas)
        return logits.argmax(dim=1) if self.argmax else logits


def switch_to_deploy(model: nn.Module) -> int:
    """Fold every block that has a deploy form (RT-DETR's RepVGG blocks:
    two convolution branches into one); returns how many were folded."""
    count = 0
    for module in model.modules():
        if callable(getattr(module, 'switch_to_deploy', None)) and \
                not getattr(module, 'deploy', False):
            module.switch_to_deploy()
            count += 1
    return count


def export_module(model: nn.Module, scope: str, shape: Sequence[int],
                  seg_output: str = 'logits') -> Tuple[nn.Module, str]:
    """(the module to trace, its signature key) for a model built from a
    ``scope`` config, in eval mode with its deploy forms switched on."""
    if scope not in SCOPE_TASKS:
        raise ValueError(f'ONNX export covers mmpretrain, mmdet (RT-DETR) '
                         f'and mmseg configs; this one has default_scope '
                         f'{scope!r}.')
    if seg_output not in ('logits', 'argmax'):
        raise ValueError(f"seg_output is 'logits' or 'argmax', not "
                         f'{seg_output!r}')
    model.eval()
    switch_to_deploy(model)
    task = SCOPE_TASKS[scope]
    if task == 'classification':
        return ClassifierExport(model).eval(), task
    if task == 'detection':
        return RTDETRExport(model).eval(), task
    return (SegmentorExport(model, shape, seg_output == 'argmax').eval(),
            f'segmentation-{seg_output}')
