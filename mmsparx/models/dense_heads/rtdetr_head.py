"""RT-DETR's head: the transformer decoder, its Hungarian-matched losses
and the top-k post-processing (no NMS).

Losses follow the official ``SetCriterion`` (``loss_labels_vfl`` +
``loss_boxes``) and matching its ``HungarianMatcher`` (focal cost), built
from mmdet's ``HungarianAssigner`` and match costs, which compute the same
cost matrix (focal eps 1e-12 instead of 1e-8).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import SampleList
from mmdet.structures.bbox import (bbox_cxcywh_to_xyxy, bbox_overlaps,
                                   bbox_xyxy_to_cxcywh, get_box_tensor)
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from mmsparx.models.layers.transformer.rtdetr_transformer import \
    RTDETRTransformer

# One matched set: per image, (query indices, gt indices).
Matches = List[Tuple[Tensor, Tensor]]

DEFAULT_ASSIGNER = dict(
    type='HungarianAssigner',
    match_costs=[
        dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0),
        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
        dict(type='IoUCost', iou_mode='giou', weight=2.0),
    ])


class RTDETRHead(BaseModule):
    """RT-DETR decoder, losses and post-processing as an mmdet head.

    Supervised sets (each gives ``loss_cls``, ``loss_bbox``, ``loss_iou``,
    divided by the batch's ground-truth count averaged over ranks):
    every decoder layer (the last unprefixed, earlier ones ``d{i}.``), the
    encoder's top-k (``enc_``), and the denoising outputs of every layer
    (``dn_`` / ``d{i}.dn_``; fixed pairs, divided by count x groups).
    The matcher is re-run for every non-denoising set.

    Args:
        num_classes: number of classes; passed into the transformer.
            Defaults to 80.
        transformer: keyword arguments of :class:`RTDETRTransformer`
            (without ``num_classes``). Defaults to its defaults.
        loss_cls: classification loss config, called as
            ``loss(logits [N, C], onehot [N, C], iou [N], avg_factor)``.
            Defaults to ``RTDETRVarifocalLoss(alpha=0.75, gamma=2.0)``.
        loss_bbox: L1 loss on normalised cxcywh boxes.
            Defaults to ``L1Loss(loss_weight=5.0)``.
        loss_iou: IoU loss on normalised xyxy boxes.
            Defaults to ``GIoULoss(loss_weight=2.0)``.
        train_cfg: ``dict(assigner=...)``; defaults to the official
            matcher costs (2 focal, 5 L1, 2 GIoU).
        test_cfg: ``dict(max_per_img=300)``: detections kept per image.
        init_cfg: mmengine init config. The transformer initialises itself
            (official scheme), so leave it None.
    """

    def __init__(self,
                 num_classes: int = 80,
                 transformer: Optional[dict] = None,
                 loss_cls: Optional[dict] = None,
                 loss_bbox: Optional[dict] = None,
                 loss_iou: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        transformer = dict(transformer or {})
        if transformer.setdefault('num_classes', num_classes) != num_classes:
            raise ValueError(
                f"RTDETRHead: transformer num_classes "
                f"{transformer['num_classes']} != head num_classes "
                f'{num_classes}; set it on the head only.')
        self.num_classes = num_classes
        self.transformer = RTDETRTransformer(**transformer)
        self.loss_cls = MODELS.build(loss_cls or dict(
            type='RTDETRVarifocalLoss', alpha=0.75, gamma=2.0,
            loss_weight=1.0))
        self.loss_bbox = MODELS.build(
            loss_bbox or dict(type='L1Loss', loss_weight=5.0))
        self.loss_iou = MODELS.build(
            loss_iou or dict(type='GIoULoss', loss_weight=2.0))
        self.train_cfg = dict(train_cfg or {})
        self.test_cfg = dict(test_cfg or {})
        self.assigner = TASK_UTILS.build(
            self.train_cfg.get('assigner', DEFAULT_ASSIGNER))
        self.max_per_img = self.test_cfg.get('max_per_img', 300)

    def forward(self, x: Sequence[Tensor]) -> dict:
        """Transformer forward without denoising queries (what mmdet's
        ``_forward`` and FLOP counting call); in eval mode only the
        ``eval_idx`` layer is decoded into outputs."""
        return self.transformer(x)

    # ------------------------------------------------------------ training
    def loss(self, x: Sequence[Tensor],
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses of one batch; see the class docstring for the keys."""
        gt_labels, gt_boxes, img_shapes = self._targets(batch_data_samples,
                                                        x[0].device)
        dn = self.transformer.make_denoising(gt_labels, gt_boxes)
        outputs = self.transformer(x, dn)
        return self.loss_by_outputs(outputs, gt_labels, gt_boxes, img_shapes)

    @staticmethod
    def _targets(batch_data_samples: SampleList, device: torch.device
                 ) -> Tuple[List[Tensor], List[Tensor], List[tuple]]:
        """Labels, boxes normalised to cxcywh in [0, 1] by each image's
        ``img_shape`` (the frame the transformer predicts in), and the
        ``(h, w)`` shapes."""
        labels, boxes, shapes = [], [], []
        for sample in batch_data_samples:
            h, w = sample.metainfo['img_shape'][:2]
            gt = sample.gt_instances
            xyxy = get_box_tensor(gt.bboxes).to(device=device,
                                                dtype=torch.float32)
            scale = xyxy.new_tensor([w, h, w, h])
            boxes.append(bbox_xyxy_to_cxcywh(xyxy / scale))
            labels.append(gt.labels.to(device=device, dtype=torch.long))
            shapes.append((h, w))
        return labels, boxes, shapes

    def loss_by_outputs(self, outputs: dict, gt_labels: List[Tensor],
                        gt_boxes: List[Tensor],
                        img_shapes: List[tuple]) -> Dict[str, Tensor]:
        """Losses from the transformer's outputs dict.

        Args:
            outputs: :meth:`RTDETRTransformer.forward`'s dict (training).
            gt_labels: per image [n_i] int64 in [0, num_classes).
            gt_boxes: per image [n_i, 4] normalised cxcywh.
            img_shapes: per image ``(h, w)``; the matcher's L1 and GIoU
                costs are computed on boxes scaled by it, as mmdet's costs
                expect.
        """
        logits = outputs['logits']
        # Matching and losses in float32 even under AMP: the focal cost's
        # log and the varifocal weights lose too much in half precision.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            num_gts = sum(len(labels) for labels in gt_labels)
            num_boxes = reduce_mean(
                logits.new_tensor([float(num_gts)], dtype=torch.float32))
            num_boxes = num_boxes.clamp(min=1).item()

            losses = {}
            all_logits = logits.float()
            all_boxes = outputs['boxes'].float()
            num_layers = all_logits.shape[0]
            for i in range(num_layers):
                prefix = '' if i == num_layers - 1 else f'd{i}.'
                matches = self._match(all_logits[i], all_boxes[i], gt_labels,
                                      gt_boxes, img_shapes)
                losses.update(self._prefixed(prefix, self._set_losses(
                    all_logits[i], all_boxes[i], gt_labels, gt_boxes,
                    matches, num_boxes)))

            if outputs.get('enc_logits') is not None:
                enc_logits = outputs['enc_logits'].float()
                enc_boxes = outputs['enc_boxes'].float()
                matches = self._match(enc_logits, enc_boxes, gt_labels,
                                      gt_boxes, img_shapes)
                losses.update(self._prefixed('enc_', self._set_losses(
                    enc_logits, enc_boxes, gt_labels, gt_boxes, matches,
                    num_boxes)))

            losses.update(self._dn_losses(outputs, gt_labels, gt_boxes,
                                          num_boxes, num_layers))
        return losses

    def _dn_losses(self, outputs: dict, gt_labels: List[Tensor],
                   gt_boxes: List[Tensor], num_boxes: float,
                   num_layers: int) -> Dict[str, Tensor]:
        """Denoising losses with the fixed query -> gt pairs, or zeros that
        still touch every parameter when no denoising queries were made."""
        names = [f'{"" if i == num_layers - 1 else f"d{i}."}dn_{key}'
                 for i in range(num_layers)
                 for key in ('loss_cls', 'loss_bbox', 'loss_iou')]
        if outputs.get('dn_logits') is None:
            # A batch without ground truth makes no denoising queries: the
            # keys stay (every rank logs the same), as zeros. The logits
            # carry the transformer's zero-weighted use of the label
            # embedding, so DDP sees the same parameters used on every rank.
            zero = outputs['logits'].float().sum() * 0
            return {name: zero for name in names}

        meta = outputs['dn_meta']
        num_groups = meta['num_groups']
        matches = []
        for labels, pos_idx in zip(gt_labels, meta['positive_idx']):
            gt_idx = torch.arange(len(labels), device=labels.device)
            gt_idx = gt_idx.repeat(num_groups)
            if len(pos_idx) != len(gt_idx):
                raise ValueError(
                    f'RTDETRHead: {len(pos_idx)} positive denoising queries '
                    f'for {len(labels)} gts x {num_groups} groups.')
            matches.append((pos_idx.to(labels.device), gt_idx))
        dn_logits = outputs['dn_logits'].float()
        dn_boxes = outputs['dn_boxes'].float()
        losses = {}
        for i in range(num_layers):
            prefix = f'{"" if i == num_layers - 1 else f"d{i}."}dn_'
            losses.update(self._prefixed(prefix, self._set_losses(
                dn_logits[i], dn_boxes[i], gt_labels, gt_boxes, matches,
                num_boxes * num_groups)))
        return losses

    @staticmethod
    def _prefixed(prefix: str, losses: Dict[str, Tensor]
                  ) -> Dict[str, Tensor]:
        return {prefix + key: value for key, value in losses.items()}

    @torch.no_grad()
    def _match(self, logits: Tensor, boxes: Tensor, gt_labels: List[Tensor],
               gt_boxes: List[Tensor], img_shapes: List[tuple]) -> Matches:
        """Hungarian matching of one output set.

        Args:
            logits: [B, N, C]; boxes: [B, N, 4] normalised cxcywh.

        Returns:
            Per image (query indices, gt indices), possibly empty.
        """
        matches = []
        for b, (labels, target, (h, w)) in enumerate(
                zip(gt_labels, gt_boxes, img_shapes)):
            if len(labels) == 0:
                empty = labels.new_zeros(0, dtype=torch.long)
                matches.append((empty, empty))
                continue
            scale = boxes.new_tensor([w, h, w, h])
            pred = InstanceData(
                scores=logits[b], bboxes=bbox_cxcywh_to_xyxy(boxes[b]) * scale)
            gt = InstanceData(
                labels=labels, bboxes=bbox_cxcywh_to_xyxy(target) * scale)
            result = self.assigner.assign(
                pred_instances=pred, gt_instances=gt,
                img_meta=dict(img_shape=(h, w)))
            query_idx = torch.nonzero(result.gt_inds > 0).squeeze(-1)
            matches.append((query_idx, result.gt_inds[query_idx] - 1))
        return matches

    def _set_losses(self, logits: Tensor, boxes: Tensor,
                    gt_labels: List[Tensor], gt_boxes: List[Tensor],
                    matches: Matches, num_boxes: float) -> Dict[str, Tensor]:
        """``loss_cls``, ``loss_bbox``, ``loss_iou`` of one output set.

        Args:
            logits: [B, N, C]; boxes: [B, N, 4] normalised cxcywh.
            matches: per image (query indices, gt indices).
            num_boxes: the normaliser (ground truths, averaged over ranks).
        """
        batch_size, num_queries, num_classes = logits.shape
        batch_idx = torch.cat([torch.full_like(q, b)
                               for b, (q, _) in enumerate(matches)])
        query_idx = torch.cat([q for q, _ in matches])
        labels = torch.cat([lab[g] for lab, (_, g) in zip(gt_labels, matches)])
        target = torch.cat([box[g] for box, (_, g) in zip(gt_boxes, matches)])

        onehot = logits.new_zeros(batch_size, num_queries, num_classes)
        iou = logits.new_zeros(batch_size, num_queries)
        if len(query_idx) > 0:
            pred = boxes[batch_idx, query_idx]
            pred_xyxy = bbox_cxcywh_to_xyxy(pred)
            target_xyxy = bbox_cxcywh_to_xyxy(target.float())
            onehot[batch_idx, query_idx, labels] = 1
            # Plain IoU (not GIoU) as the classification target, detached:
            # the score learns to predict localisation quality.
            iou[batch_idx, query_idx] = bbox_overlaps(
                pred_xyxy.detach(), target_xyxy, is_aligned=True)
            loss_bbox = self.loss_bbox(pred, target.float(),
                                       avg_factor=num_boxes)
            loss_iou = self.loss_iou(pred_xyxy, target_xyxy,
                                     avg_factor=num_boxes)
        else:
            # Keep the keys and the graph when nothing is matched.
            loss_bbox = loss_iou = boxes.sum() * 0
        loss_cls = self.loss_cls(
            logits.reshape(-1, num_classes), onehot.reshape(-1, num_classes),
            iou.reshape(-1), avg_factor=num_boxes)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_iou=loss_iou)

    # ------------------------------------------------------------ inference
    def predict(self, x: Sequence[Tensor], batch_data_samples: SampleList,
                rescale: bool = True) -> List[InstanceData]:
        """Detections of the ``eval_idx`` layer, ``max_per_img`` per image.

        Returns:
            Per image ``InstanceData(scores, labels, bboxes)``, bboxes in
            absolute xyxy, in the original image when ``rescale``.
        """
        img_metas = [sample.metainfo for sample in batch_data_samples]
        return self.predict_by_outputs(self.transformer(x), img_metas,
                                       rescale)

    def predict_by_outputs(self, outputs: dict, img_metas: List[dict],
                           rescale: bool = True) -> List[InstanceData]:
        """Top-k over all queries x classes of the last output layer
        (the official post-processor; no NMS: the one-to-one matching
        already suppresses duplicates)."""
        logits = outputs['logits'][-1].float()
        boxes = outputs['boxes'][-1].float()
        scores, labels, boxes = top_detections(
            logits, boxes, min(self.max_per_img,
                               logits.shape[1] * logits.shape[2]))
        results = []
        for img_scores, img_labels, img_boxes, meta in zip(
                scores, labels, boxes, img_metas):
            h, w = meta['img_shape'][:2]
            img_boxes = img_boxes * img_boxes.new_tensor([w, h, w, h])
            if rescale:
                # mmdet's scale_factor is (w_scale, h_scale) from the
                # original image to the network input.
                img_boxes = img_boxes / img_boxes.new_tensor(
                    meta['scale_factor']).repeat(2)
            results.append(InstanceData(scores=img_scores, labels=img_labels,
                                        bboxes=img_boxes))
        return results


def top_detections(logits: Tensor, boxes: Tensor,
                   count: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The official post-processor's top ``count`` over queries x classes,
    for the whole batch at once (so an exported graph keeps its batch
    dynamic).

    Args:
        logits: [B, N, C] class logits; boxes: [B, N, 4] normalised cxcywh.

    Returns:
        scores [B, count] (sigmoid, descending), labels [B, count] (0-based)
        and boxes [B, count, 4] (normalised xyxy).
    """
    num_classes = logits.shape[-1]
    scores, index = logits.sigmoid().flatten(1).topk(count, dim=1)
    labels = index % num_classes
    query = torch.div(index, num_classes, rounding_mode='floor')
    picked = boxes.gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, bbox_cxcywh_to_xyxy(picked)
