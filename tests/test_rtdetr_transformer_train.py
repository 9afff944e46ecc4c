"""RT-DETR's decoder in training: denoising queries and their masks,
gradients reaching every parameter, init, parameter counts, bad input."""
import math

import pytest
import torch

from mmsparx.models.layers.transformer.rtdetr_transformer import \
    RTDETRTransformer
from test_rtdetr_transformer import (C, TINY, _dn, _feats, _record_layers,
                                     _tiny)


# -------------------------------------------------------------- denoising
def test_forward_with_denoising_splits_and_masks():
    model = _tiny(randomise=True).train()
    torch.manual_seed(5)
    dn = _dn(model)
    # max_gt 2, budget 8 -> 4 groups of [2 pos | 2 neg]: 16 dn queries.
    assert tuple(dn.meta['split']) == (16, 6)
    assert dn.meta['num_groups'] == 4
    seen, hooks = _record_layers(model)
    out = model(_feats(), dn)
    for h in hooks:
        h.remove()
    L = TINY['num_layers']
    assert out['dn_logits'].shape == (L, 2, 16, C)
    assert out['dn_boxes'].shape == (L, 2, 16, 4)
    assert out['logits'].shape == (L, 2, 6, C)
    assert out['boxes'].shape == (L, 2, 6, 4)
    assert out['enc_logits'].shape == (2, 6, C)
    assert out['dn_meta'] is dn.meta
    # The first layer got [dn | matching] queries, refs and the mask.
    args = seen[0][1]
    assert torch.allclose(args[0][:, :16], dn.query)
    assert torch.allclose(args[2][:, :16], dn.ref_logits.sigmoid())
    assert args[6] is dn.attn_mask
    # Matching queries cannot see denoising queries: their outputs do not
    # change when the denoising queries do.
    dn2 = _dn(model)
    out2 = model(_feats(), dn2)
    assert not torch.allclose(out2['dn_boxes'], out['dn_boxes'])
    assert torch.allclose(out2['boxes'], out['boxes'], atol=1e-6)
    assert torch.allclose(out2['logits'], out['logits'], atol=1e-5)


def test_gradients_reach_every_parameter():
    model = _tiny(randomise=True).train()
    out = model(_feats(), _dn(model))
    total = sum(out[k].sum() for k in ('logits', 'boxes', 'enc_logits',
                                       'enc_boxes', 'dn_logits', 'dn_boxes'))
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_label_embedding_used_without_ground_truth():
    # DDP needs every parameter in every rank's graph, also on a rank whose
    # batch holds no ground truth (no denoising queries).
    model = _tiny().train()
    out = model(_feats())
    assert out['dn_logits'] is None
    out['logits'].sum().backward()
    grad = model.denoising_class_embed.weight.grad
    assert grad is not None and grad.abs().sum() == 0


# ------------------------------------------------------------------- init
def _check_init(model, fresh=True):
    prior = -math.log(99)
    for head in [model.enc_score_head, *model.dec_score_head]:
        assert torch.allclose(head.bias, torch.full_like(head.bias, prior))
    for head in [model.enc_bbox_head, *model.dec_bbox_head]:
        assert head.layers[-1].weight.abs().max() == 0
        assert head.layers[-1].bias.abs().max() == 0
    for lin in [model.enc_output[0], *model.query_pos_head.layers]:
        bound = math.sqrt(6 / (lin.in_features + lin.out_features))
        assert lin.weight.abs().max() <= bound
        assert lin.weight.abs().max() > 0.9 * bound
    for layer in model.decoder.layers:
        assert layer.cross_attn.attention_weights.weight.abs().max() == 0
    if not fresh:
        return
    # Input projections: PyTorch's conv default (Kaiming-uniform a=sqrt(5),
    # bound 1 / sqrt(fan_in)), no bias.
    for proj in model.input_proj:
        fan_in = proj.conv.in_channels * proj.conv.kernel_size[0] ** 2
        assert proj.conv.bias is None
        assert proj.conv.weight.abs().max() <= 1 / math.sqrt(fan_in)


def test_init_and_reinit():
    model = _tiny()
    _check_init(model)
    assert math.isclose(-math.log(99), -4.59511985, rel_tol=1e-8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.init_weights()
    _check_init(model, fresh=False)


# ------------------------------------------------------- parameter counts
@pytest.mark.parametrize('layers,total', [(3, 4_019_376), (4, 5_168_420)])
def test_parameter_counts(layers, total):
    model = RTDETRTransformer(num_classes=80, embed_dims=256,
                              in_channels=(256, 256, 256), num_layers=layers)
    count = sum(p.numel() for p in model.parameters())
    assert count == total
    # One layer: MHA 263,168 + deformable attention 205,600 + FFN 525,568
    # + 3 LayerNorms 1,536.
    assert sum(p.numel() for p in model.decoder.layers[0].parameters()) == \
        995_872
    assert sum(p.numel() for p in model.decoder.layers[0].cross_attn
               .parameters()) == 205_600
    keys = set(model.state_dict())
    for key in ['input_proj.2.conv.weight', 'input_proj.0.norm.running_var',
                'decoder.layers.0.self_attn.in_proj_weight',
                'decoder.layers.0.cross_attn.sampling_offsets.bias',
                'decoder.layers.0.cross_attn.value_proj.weight',
                'decoder.layers.0.norm3.weight',
                'decoder.layers.0.linear2.bias',
                'denoising_class_embed.weight',
                'query_pos_head.layers.1.weight',
                'enc_output.0.weight', 'enc_output.1.bias',
                'enc_score_head.weight', 'enc_bbox_head.layers.2.weight',
                f'dec_score_head.{layers - 1}.bias',
                f'dec_bbox_head.{layers - 1}.layers.2.bias']:
        assert key in keys, key
    assert not any('anchor' in k for k in keys)


def test_extra_level_and_bad_input():
    model = _tiny(in_channels=(8, 16), num_levels=3)
    assert model.input_proj[2].conv.kernel_size == (3, 3)
    assert model.input_proj[2].conv.stride == (2, 2)
    feats = _feats()[:2]
    memory, shapes = model._flatten_memory(feats)
    assert shapes == [(8, 8), (4, 4), (2, 2)] and memory.shape[1] == 84
    with pytest.raises(ValueError):
        model._flatten_memory(_feats())
    with pytest.raises(ValueError):
        RTDETRTransformer(**{**TINY, 'eval_idx': 3})


def test_decoder_reads_unmasked_memory():
    # Officially the valid mask zeroes border tokens for the query
    # selection only (a local rebinding in ``_get_decoder_input``); the
    # decoder's deformable attention samples the unmasked memory.
    # 8x8 level: centres 0.0625 and 0.9375 fall outside (0.08, 0.92).
    model = _tiny(anchor_eps=0.08, anchor_grid_size=0.1).eval()
    memory, shapes = model._flatten_memory(_feats())
    _, valid = model.anchors(shapes, 'cpu')
    assert int((~valid).sum()) == 28  # 64 - 6 * 6
    seen, hooks = _record_layers(model)
    with torch.no_grad():
        model(_feats())
    for h in hooks:
        h.remove()
    assert torch.equal(seen[0][1][3], memory.detach())
    assert not torch.equal(seen[0][1][3], (memory * valid).detach())
