"""RT-DETR transformer: anchors, query selection, the decoder layer and its
refinement, init, parameter counts and gradients, by hand on tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh

from mmsparx.models.layers.transformer.anchors import (AnchorCache,
                                                       generate_anchors)
from mmsparx.models.layers.transformer.mlp import MLP
from mmsparx.models.layers.transformer.rtdetr_decoder import RTDETRDecoderLayer
from mmsparx.models.layers.transformer.rtdetr_transformer import \
    RTDETRTransformer

C = 5
TINY = dict(num_classes=C, embed_dims=32, in_channels=(8, 16, 8),
            num_levels=3, num_points=2, num_heads=4, num_layers=3,
            ffn_dims=64, num_queries=6, num_denoising=8)
SHAPES = [(8, 8), (4, 4), (2, 2)]


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _tiny(seed: int = 0, randomise: bool = False, **kw) -> RTDETRTransformer:
    torch.manual_seed(seed)
    model = RTDETRTransformer(**{**TINY, **kw})
    if randomise:  # so that zero-initialised heads do something
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _feats(seed: int = 1, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g)
            for c, (h, w) in zip(TINY['in_channels'], SHAPES)]


def _dn(model):
    return model.make_denoising(
        [torch.tensor([1, 2]), torch.tensor([4])],
        [torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.6, 0.3, 0.2]]),
         torch.tensor([[0.5, 0.5, 0.4, 0.4]])])


# ----------------------------------------------------------------- box ops
def test_inverse_sigmoid_and_box_conversion():
    x = torch.tensor([0.0, 1.0, 0.5, 0.25, -3.0, 7.0, 1e-7])
    want = [math.log(1e-5), math.log(1 / 1e-5), 0.0, math.log(1 / 3),
            math.log(1e-5), math.log(1 / 1e-5), math.log(1e-5)]
    assert torch.allclose(inverse_sigmoid(x), torch.tensor(want), atol=1e-6)
    assert inverse_sigmoid(torch.tensor(0.0), eps=1e-3).item() == \
        pytest.approx(math.log(1e-3))
    b = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    assert torch.allclose(bbox_cxcywh_to_xyxy(b),
                          torch.tensor([[0.4, 0.1, 0.6, 0.7]]))
    assert torch.allclose(bbox_xyxy_to_cxcywh(bbox_cxcywh_to_xyxy(b)), b)


def test_mlp_structure_and_relu():
    mlp = MLP(4, 6, 3, 3)
    assert [(l.in_features, l.out_features) for l in mlp.layers] == \
        [(4, 6), (6, 6), (6, 3)]
    x = torch.randn(2, 4)
    l0, l1, l2 = mlp.layers
    assert torch.allclose(mlp(x), l2(F.relu(l1(F.relu(l0(x))))))
    with pytest.raises(ValueError):
        MLP(4, 6, 3, 0)


# ----------------------------------------------------------------- anchors
def test_anchors_at_640():
    anchors, valid = generate_anchors([(80, 80), (40, 40), (20, 20)])
    assert anchors.shape == (1, 8400, 4) and valid.shape == (1, 8400, 1)
    # Level 0 (w = 0.05): centres 0.5/80 = 0.00625 and 79.5/80 = 0.99375
    # fall outside (0.01, 0.99): the border ring of the 80x80 map,
    # 6400 - 78 * 78 = 316 anchors. Levels 1 (0.0125..0.9875) and 2 are
    # entirely valid.
    assert int((~valid).sum()) == 316
    v0 = valid[0, :6400, 0].reshape(80, 80)
    ring = torch.zeros(80, 80, dtype=torch.bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    assert torch.equal(~v0, ring)
    assert valid[0, 6400:].all()
    assert torch.isinf(anchors[~valid[..., 0]]).all()
    assert (anchors[~valid[..., 0]] > 0).all()  # +inf
    assert torch.isfinite(anchors[valid[..., 0]]).all()
    # Level 0, (x, y) = (1, 1): index 81, centre 1.5 / 80.
    want = [_logit(1.5 / 80), _logit(1.5 / 80), _logit(0.05), _logit(0.05)]
    assert torch.allclose(anchors[0, 81], torch.tensor(want), atol=1e-5)
    # Level 0, (x, y) = (2, 1): row-major, x fastest.
    assert anchors[0, 82, 0].item() == pytest.approx(
        _logit(2.5 / 80), abs=1e-5)
    # Level 1, (0, 0): index 6400, centre 0.0125, size 0.1 (valid).
    want = [_logit(0.0125), _logit(0.0125), _logit(0.1), _logit(0.1)]
    assert torch.allclose(anchors[0, 6400], torch.tensor(want), atol=1e-5)
    # Level 2, last: index 8399, centre 19.5 / 20, size 0.2.
    want = [_logit(0.975), _logit(0.975), _logit(0.2), _logit(0.2)]
    assert torch.allclose(anchors[0, 8399], torch.tensor(want), atol=1e-5)


def test_anchors_non_square_and_cache():
    anchors, _ = generate_anchors([(2, 3)], grid_size=0.1, eps=0.01)
    # Row-major: index 1 is (x, y) = (1, 0): centre (1.5/3, 0.5/2).
    assert torch.allclose(anchors[0, 1].sigmoid(),
                          torch.tensor([0.5, 0.25, 0.1, 0.1]), atol=1e-6)
    cache = AnchorCache(max_entries=2)
    a = cache([(4, 4), (2, 2)], 'cpu')
    assert cache([[4, 4], [2, 2]], torch.device('cpu')) is a
    assert len(cache) == 1
    half = cache([(4, 4), (2, 2)], 'cpu', torch.float16)
    assert half[0].dtype == torch.float16 and len(cache) == 2
    cache([(3, 3)], 'cpu')
    assert len(cache) == 2  # least recently used entry dropped
    assert cache([(4, 4), (2, 2)], 'cpu') is not a


# ------------------------------------------------------ the decoder layer
def _bilinear(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img [c, H, W] at normalised (x, y), align_corners=False, zero pad."""
    c, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c)
    for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
        if 0 <= xi < w and 0 <= yi < h:
            out += img[:, yi, xi] * (1 - abs(px - xi)) * (1 - abs(py - yi))
    return out


def _deform_attn_reference(attn, query, ref, memory, shapes):
    """The official RT-DETR deformable attention, loop by loop: sampling
    location = ref[:2] + offset / points * ref[2:] * 0.5, softmax over
    levels x points, value_proj before and output_proj after."""
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    bs, nq, dims = query.shape
    hd = dims // heads
    value = attn.value_proj(memory)
    offsets = attn.sampling_offsets(query).reshape(bs, nq, heads, levels,
                                                   points, 2)
    weights = attn.attention_weights(query).reshape(
        bs, nq, heads, levels * points).softmax(-1).reshape(
            bs, nq, heads, levels, points)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(bs, nq, dims)
    for b in range(bs):
        for q in range(nq):
            for m in range(heads):
                acc = torch.zeros(hd)
                for lv, (h, w) in enumerate(shapes):
                    img = value[b, starts[lv]:starts[lv + 1],
                                m * hd:(m + 1) * hd].T.reshape(hd, h, w)
                    for p in range(points):
                        loc = ref[b, q, :2] + offsets[b, q, m, lv, p] / \
                            points * ref[b, q, 2:] * 0.5
                        acc += weights[b, q, m, lv, p] * _bilinear(
                            img, loc[0].item(), loc[1].item())
                out[b, q, m * hd:(m + 1) * hd] = acc
    return attn.output_proj(out)


def _layer_inputs(seed=0, nq=3, dims=16):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (2, 2)]
    memory = torch.randn(2, 16, dims, generator=g)
    query = torch.randn(2, nq, dims, generator=g)
    pos = torch.randn(2, nq, dims, generator=g)
    ref = torch.rand(2, nq, 4, generator=g) * 0.6 + 0.2
    spatial = torch.tensor(shapes)
    start = torch.tensor([0, 12])
    return query, pos, ref, memory, shapes, spatial, start


def test_decoder_layer_matches_hand_computation():
    torch.manual_seed(0)
    layer = RTDETRDecoderLayer(16, 2, 24, num_levels=2, num_points=2).eval()
    with torch.no_grad():  # non-trivial offsets and attention weights
        for p in layer.cross_attn.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    query, pos, ref, memory, shapes, spatial, start = _layer_inputs()
    mask = torch.tensor([[False, True, False], [False, False, False],
                         [True, True, False]])
    with torch.no_grad():
        got = layer(query, pos, ref, memory, spatial, start, mask)
        q = query + pos
        sa = layer.self_attn(q, q, query, attn_mask=mask)[0]
        t = layer.norm1(query + sa)
        t = layer.norm2(t + _deform_attn_reference(layer.cross_attn, t + pos,
                                                   ref, memory, shapes))
        t = layer.norm3(t + layer.linear2(F.relu(layer.linear1(t))))
    assert torch.allclose(got, t, atol=1e-5)


def test_deformable_attention_init_is_official():
    layer = RTDETRDecoderLayer(256, 8, 1024, num_levels=3, num_points=4)
    attn = layer.cross_attn
    assert attn.sampling_offsets.weight.abs().max() == 0
    bias = attn.sampling_offsets.bias.reshape(8, 3, 4, 2)
    # Head h points along angle 2 pi h / 8, scaled so max |coord| = 1, and
    # point p sits p + 1 units out, on every level.
    for h, (dx, dy) in enumerate([(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0),
                                  (-1, -1), (0, -1), (1, -1)]):
        for p in range(4):
            assert torch.allclose(bias[h, :, p],
                                  torch.tensor([dx, dy]) * (p + 1.0),
                                  atol=1e-6)
    assert attn.attention_weights.weight.abs().max() == 0
    assert attn.attention_weights.bias.abs().max() == 0
    bound = math.sqrt(6 / 512)  # xavier uniform, 256 -> 256
    for proj in (attn.value_proj, attn.output_proj):
        assert proj.weight.abs().max() <= bound
        assert proj.weight.abs().max() > 0.95 * bound
        assert proj.bias.abs().max() == 0


def test_ffn_residual_clamped_in_float16():
    layer = RTDETRDecoderLayer(16, 2, 24, num_levels=2, num_points=2)
    with torch.no_grad():
        layer.linear1.weight.zero_()
        layer.linear2.weight.zero_()
        layer.linear2.bias.fill_(10000.0)
    x = torch.full((1, 2, 16), 60000.0)
    # float32: no clamp, 70000; float16 would overflow to inf.
    assert torch.equal(layer.ffn_residual(x), torch.full_like(x, 70000.0))
    half = layer.half()
    out = half.ffn_residual(x.half())
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.full_like(out, 65504.0))
    with torch.no_grad():
        half.linear2.bias.fill_(-10000.0)
    assert torch.equal(half.ffn_residual(-x.half()),
                       torch.full_like(out, -65504.0))


# ------------------------------------------------------- query selection
def test_query_selection_topk_and_detach():
    model = _tiny(randomise=True).train()
    memory, shapes = model._flatten_memory(_feats())
    assert shapes == SHAPES and memory.shape == (2, 84, 32)
    content, ref_logits, enc_logits, enc_boxes = model._select_queries(
        memory, shapes)
    # Recompute over all 84 tokens and take the top 6 directly.
    anchors, valid = generate_anchors(SHAPES)
    out_mem = model.enc_output(memory * valid)
    logits = model.enc_score_head(out_mem)
    boxes = model.enc_bbox_head(out_mem) + anchors
    top = logits.max(-1).values.topk(6, dim=1).indices
    for b in range(2):
        assert torch.allclose(enc_logits[b], logits[b, top[b]])
        assert torch.allclose(ref_logits[b], boxes[b, top[b]])
        assert torch.allclose(enc_boxes[b], boxes[b, top[b]].sigmoid())
        assert torch.allclose(content[b], out_mem[b, top[b]])
        # And those are the six largest maxima of all tokens.
        best = logits[b].max(-1).values.sort(descending=True).values[:6]
        assert torch.allclose(enc_logits[b].max(-1).values, best)
    assert not content.requires_grad and not ref_logits.requires_grad
    assert enc_logits.requires_grad and enc_boxes.requires_grad


def test_query_selection_known_winner():
    # A token whose memory makes class 2 fire wins even at low values
    # elsewhere: build enc_output/score head so the max logit is token t's.
    model = _tiny()
    with torch.no_grad():
        model.enc_output[0].weight.copy_(torch.eye(32))
        model.enc_output[0].bias.zero_()
        model.enc_score_head.weight.zero_()
        model.enc_score_head.weight[2, 0] = 1.0  # logit 2 = LN(x)[0]
        model.enc_score_head.bias.zero_()
    memory = torch.zeros(1, 84, 32)
    memory[0, :, 1] = 1.0                     # LN(x)[0] < 0 everywhere ...
    for rank, token in enumerate([70, 5, 40]):
        memory[0, token, 0] = 3.0 - rank      # ... but larger here
    model.num_queries = 3
    _, _, enc_logits, _ = model._select_queries(memory, SHAPES)
    ln = F.layer_norm(memory, (32,))
    assert torch.allclose(enc_logits[0, :, 2], ln[0, [70, 5, 40], 0])


# ------------------------------------------------------ decoder refinement
def _record_layers(model):
    seen = []
    hooks = [layer.register_forward_hook(
        lambda mod, args, out, i=i: seen.append((i, args, out)))
        for i, layer in enumerate(model.decoder.layers)]
    return seen, hooks


def test_refinement_values_train_and_eval():
    model = _tiny(randomise=True).train()
    seen, hooks = _record_layers(model)
    out = model(_feats())
    heads = model.dec_bbox_head
    assert [s[0] for s in seen] == [0, 1, 2]
    ref0 = seen[0][1][2]  # the layer's ref_boxes argument
    with torch.no_grad():
        _, ref_logits, _, _ = model._select_queries(
            *model._flatten_memory(_feats()))
    assert torch.allclose(ref0, ref_logits.sigmoid())
    prev = ref0
    for i, (_, args, q_out) in enumerate(seen):
        assert torch.allclose(args[2], prev)  # reference = previous box
        want = torch.sigmoid(heads[i](q_out) + inverse_sigmoid(prev))
        assert torch.allclose(out['boxes'][i], want, atol=1e-6)
        assert torch.allclose(out['logits'][i],
                              model.dec_score_head[i](q_out))
        prev = out['boxes'][i]
        # The query position embedding is the MLP of that reference.
        assert torch.allclose(args[1], model.query_pos_head(args[2]))
    for h in hooks:
        h.remove()

    # Eval: stop at eval_idx = 1, return that layer only.
    model.eval()
    model.decoder.eval_idx = 1
    seen, hooks = _record_layers(model)
    ev = model(_feats())
    assert [s[0] for s in seen] == [0, 1]
    assert ev['logits'].shape == (1, 2, 6, C)
    assert ev['boxes'].shape == (1, 2, 6, 4)
    box0 = torch.sigmoid(heads[0](seen[0][2]) + inverse_sigmoid(seen[0][1][2]))
    assert torch.allclose(seen[1][1][2], box0)
    want = torch.sigmoid(heads[1](seen[1][2]) + inverse_sigmoid(box0))
    assert torch.allclose(ev['boxes'][0], want, atol=1e-6)
    assert torch.allclose(ev['logits'][0], model.dec_score_head[1](seen[1][2]))
    assert ev['enc_logits'] is None and ev['enc_boxes'] is None
    assert ev['dn_logits'] is None and ev['dn_meta'] is None
    for h in hooks:
        h.remove()


def _grad_of(model, loss, module):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    grads = [p.grad for p in module.parameters()]
    if any(g is None for g in grads):
        return 0.0
    return sum(g.abs().sum().item() for g in grads)


def test_look_forward_twice_gradients():
    model = _tiny(randomise=True).train()
    out = model(_feats())
    heads = model.dec_bbox_head
    # Layer 1's output box uses layer 0's box un-detached: loss 1 trains
    # bbox heads 0 and 1.
    assert _grad_of(model, out['boxes'][1].sum(), heads[0]) > 0
    assert _grad_of(model, out['boxes'][1].sum(), heads[1]) > 0
    # Layer 0's box: only head 0.
    assert _grad_of(model, out['boxes'][0].sum(), heads[1]) == 0
    # Layer 2's box reaches head 1 (look forward twice) but not head 0: the
    # reference fed to layer 1 (layer 0's box) is detached.
    assert _grad_of(model, out['boxes'][2].sum(), heads[1]) > 0
    assert _grad_of(model, out['boxes'][2].sum(), heads[0]) == 0
    # Selected content and references are detached from the encoder head:
    # decoder losses never reach enc_score_head / enc_bbox_head.
    dec_loss = out['boxes'].sum() + out['logits'].sum()
    assert _grad_of(model, dec_loss, model.enc_score_head) == 0
    assert _grad_of(model, dec_loss, model.enc_bbox_head) == 0
    assert _grad_of(model, out['enc_boxes'].sum(), model.enc_bbox_head) > 0
