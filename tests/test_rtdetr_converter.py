"""The official RT-DETR converter, proven by numbers: a random official-layout
model (``rtdetr_reference``, randomised BN statistics and every weight
perturbed) -> its checkpoint -> convert -> strict load into mmsparx's
``RTDETR`` -> the same eval outputs. Tolerance (float32): max abs
difference <= 1e-5 x max(1, max |official|). Measured: backbone 0 (bitwise),
encoder <= 2.5e-6 relative (~1e-4 absolute on maps reaching ~50: mmsparx's
AIFI calls attention with ``need_weights=False``, PyTorch's fused path,
the official with the default ``True``; 3.5e-6 on the attention alone),
decoder logits <= 5.1e-6 and boxes <= 8.3e-7 absolute.

On a non-square input the official AIFI position embedding scrambles the
tokens (it is built w-major, the tokens are h-major) and mmsparx's is made
right, so there only the backbone and the decoder (fed the same encoder
outputs) are compared with the official numbers; the encoder is compared
with the reference using the consistent embedding instead.
"""
import math
import os.path as osp
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from rtdetr_reference import (RTDETR as OfficialRTDETR,  # noqa: E402
                              MSDeformableAttention, parameter_count,
                              randomize, sincos_embedding_official)

from mmsparx.fileio import CheckpointError  # noqa: E402
from mmsparx.converters.rtdetr import (convert_rtdetr, layout,  # noqa: E402
                                       to_official)

TOL = 1e-5
TOOL = osp.join(ROOT, 'tools', 'model_converters', 'rtdetr.py')
R18_BASE = osp.join(ROOT, 'configs', 'rtdetr', '_base_', 'rtdetr_r18vd.py')


def detector_cfg(depth: int = 18, num_layers: int = 3) -> dict:
    """A small mmdet config dict of mmsparx's RT-DETR (official sizes)."""
    return dict(
        type='RTDETR',
        backbone=dict(type='PResNet', depth=depth),
        neck=dict(type='HybridEncoder', in_channels=[128, 256, 512],
                  expansion=0.5),
        bbox_head=dict(type='RTDETRHead', num_classes=80,
                       transformer=dict(num_layers=num_layers)))


def build(cfg: dict):
    import mmsparx  # noqa: F401  lazy registration
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def official(depth: int = 18, num_layers: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = OfficialRTDETR(depth, num_decoder_layers=num_layers)
    # its own seed: a batch drawn like the noise would correlate with it
    batch = torch.rand(2, 3, 128, 128,
                       generator=torch.Generator().manual_seed(seed + 100))
    randomize(model, seed, calibrate=batch)
    return model.eval()


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def rel_diff(a, b) -> float:
    """Max abs difference in units of the larger of 1 and max |a|: the
    encoder's maps reach ~50, where float32 rounding alone is ~1e-5."""
    return max_diff(a, b) / max(1.0, a.abs().max().item())


def matched_diff(want_logits, want_boxes, logits, boxes) -> float:
    """Max difference of [Nq, C] logits and [Nq, 4] boxes with each
    official query paired with its nearest one. Two queries whose encoder
    scores tie to ~1e-6 may swap places in the top-k order (a float32
    difference upstream decides it); the outputs are the same set."""
    a = torch.cat([want_logits, want_boxes], -1)
    b = torch.cat([logits, boxes], -1)
    pair = torch.cdist(a, b).argmin(1)
    assert sorted(pair.tolist()) == list(range(len(b))), 'not one-to-one'
    return max(rel_diff(want_logits, logits[pair]),
               rel_diff(want_boxes, boxes[pair]))


@pytest.fixture(scope='module')
def r18():
    """(official model, converted mmsparx model) for R18, 3 layers."""
    ref = official(18, 3)
    conv = convert_rtdetr({'model': ref.state_dict()})
    model = build(detector_cfg(18, 3))
    model.load_state_dict(conv.state, strict=True)
    return ref, model.eval()


# -- the reference itself -----------------------------------------------------
def test_reference_parameter_counts_match_the_spec():
    for depth, layers, (bb, enc, dec) in (
            (18, 3, (11_199_968, 4_965_120, 4_019_376)),
            (34, 4, (21_308_128, 4_965_120, 5_168_420))):
        ref = OfficialRTDETR(depth, num_decoder_layers=layers)
        assert (parameter_count(ref.backbone), parameter_count(ref.encoder),
                parameter_count(ref.decoder)) == (bb, enc, dec)
    # 20.18 M and 31.44 M: the published R18vd / R34vd totals
    assert parameter_count(OfficialRTDETR(18)) == 20_184_464


def test_reference_position_embedding_by_hand():
    # dim 4: one frequency (omega = 1). Official, 1 row x 2 columns: the
    # w-major grid puts x in the first half; h-major token 1 is (0, 1).
    pe = sincos_embedding_official(1, 2, 4)[0]
    s1, c1 = math.sin(1.), math.cos(1.)
    assert torch.allclose(pe, torch.tensor([[0., 1., 0., 1.],
                                            [s1, c1, 0., 1.]]))
    # 2 rows x 1 column: token 1 is (y=1, x=0) but gets (w=0, h=1) -> the
    # second half, i.e. the row lands where a square map puts the column.
    pe = sincos_embedding_official(2, 1, 4)[0]
    assert torch.allclose(pe[1], torch.tensor([0., 1., s1, c1]))
    # square: token (y, x) carries y in the first half (the "w" half)
    pe = sincos_embedding_official(3, 3, 4)[0]
    y, x = 2, 1
    assert torch.allclose(pe[y * 3 + x], torch.tensor(
        [math.sin(y), math.cos(y), math.sin(x), math.cos(x)]))


def test_reference_deformable_attention_matches_mmcv():
    """The reference's grid-sample attention == mmcv's module (pure
    PyTorch path), same weights, 4-d references, 3 levels."""
    from mmcv.ops import MultiScaleDeformableAttention
    torch.manual_seed(0)
    ref = MSDeformableAttention(32, 4, 3, 2)
    ours = MultiScaleDeformableAttention(32, 4, 3, 2, dropout=0.0,
                                         batch_first=True).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours.load_state_dict(ref.state_dict())
    shapes = [(6, 5), (3, 3), (2, 1)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 32)
    query = torch.randn(2, 7, 32)
    boxes = torch.rand(2, 7, 4) * 0.6 + 0.2
    spatial = torch.tensor(shapes)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    with torch.no_grad():
        a = ref(query, boxes[:, :, None], value, shapes)
        b = ours(query, value=value, identity=torch.zeros_like(query),
                 reference_points=boxes[:, :, None], spatial_shapes=spatial,
                 level_start_index=start)
    assert max_diff(a, b) < 1e-5


# -- the mapping --------------------------------------------------------------
@pytest.mark.parametrize('depth,layers,keys', [(18, 3, 533), (34, 4, 659)])
def test_keys_map_one_to_one_and_load_strictly(depth, layers, keys):
    ref = OfficialRTDETR(depth, num_decoder_layers=layers)
    randomize(ref)
    conv = convert_rtdetr({'ema': {'module': ref.state_dict(),
                                   'updates': 10}})
    assert conv.kind == 'detector' and conv.source == 'ema.module'
    assert len(conv.state) == keys and not conv.filled
    model = build(detector_cfg(depth, layers))
    assert parameter_count(model) == parameter_count(ref)
    assert set(model.state_dict()) == set(conv.state)
    model.load_state_dict(conv.state, strict=True)
    # every tensor arrives unchanged, under the renamed key
    back = to_official(model.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
    assert conv.settings['depth'] == depth
    assert conv.settings['num_layers'] == layers
    assert conv.settings['num_classes'] == 80
    assert conv.settings['expansion'] == 0.5


def test_prefix_renames():
    conv = convert_rtdetr(official(18, 3).state_dict())
    assert conv.source == 'state dict'
    for key in ('backbone.conv1.conv1_1.conv.weight',
                'neck.input_proj.0.0.weight',
                'neck.encoder.0.layers.0.self_attn.in_proj_weight',
                'bbox_head.transformer.decoder.layers.2.cross_attn.'
                'sampling_offsets.weight',
                'bbox_head.transformer.denoising_class_embed.weight'):
        assert key in conv.state


# -- the numbers --------------------------------------------------------------
def test_square_input_every_stage_matches(r18):
    ref, model = r18
    diffs = {}
    # seed 1: two near-tied queries swap in the top-k; 512: the 64x64
    # level has invalid border anchors (masked for query selection only).
    for seed, side in ((1, 128), (2, 512)):
        x = torch.rand(1, 3, side, side,
                       generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = ref(x)
            feats = model.backbone(x)
            enc = model.neck(feats)
            same = model.bbox_head(tuple(want['encoder']))
            got = model.bbox_head(model.extract_feat(x))
        assert same['logits'].shape == (1, 1, 300, 80)
        diffs[seed] = dict(
            backbone=max(rel_diff(a, b) for a, b in
                         zip(want['backbone'], feats)),
            encoder=max(rel_diff(a, b) for a, b in zip(want['encoder'],
                                                       enc)),
            logits=rel_diff(want['pred_logits'], same['logits'][0]),
            boxes=rel_diff(want['pred_boxes'], same['boxes'][0]),
            end_to_end=matched_diff(want['pred_logits'][0],
                                    want['pred_boxes'][0],
                                    got['logits'][0, 0], got['boxes'][0, 0]))
        # End to end, the encoder's float32 rounding (fused vs unfused
        # attention) passes through three more layers: 10x the tolerance.
        end_to_end = diffs[seed].pop('end_to_end')
        assert max(diffs[seed].values()) <= TOL, diffs
        assert end_to_end <= 10 * TOL, (seed, end_to_end)
        # not trivially equal: the outputs vary across queries
        assert want['pred_logits'].std() > 0.1
        assert want['pred_boxes'].std() > 0.05
    assert diffs[1]['backbone'] == 0.0  # the same convs, the same order


def test_non_square_backbone_and_decoder_match(r18):
    ref, model = r18
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref(x)
        feats = model.backbone(x)
        enc = model.neck(feats)
        # the decoder fed the official encoder outputs
        got = model.bbox_head(tuple(want['encoder']))
    assert [f.shape[2:] for f in feats] == [(16, 20), (8, 10), (4, 5)]
    assert max(rel_diff(a, b) for a, b in zip(want['backbone'], feats)) \
        <= TOL
    assert rel_diff(want['pred_logits'], got['logits'][0]) <= TOL
    assert rel_diff(want['pred_boxes'], got['boxes'][0]) <= TOL
    # the encoder departs from the official only by the position embedding:
    # far from the official, equal to the reference with the consistent one
    assert rel_diff(want['encoder'][-1], enc[-1]) > 1e-2
    ref.encoder.official_pe = False
    try:
        with torch.no_grad():
            fixed = ref.encoder(want['backbone'])
    finally:
        ref.encoder.official_pe = True
    assert max(rel_diff(a, b) for a, b in zip(fixed, enc)) <= TOL


def test_r34_outputs_match():
    ref = official(34, 4, seed=3)
    model = build(detector_cfg(34, 4)).eval()
    model.load_state_dict(convert_rtdetr({'model': ref.state_dict()}).state,
                          strict=True)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = ref(x)
        feats = model.backbone(x)
        got = model.bbox_head(tuple(want['encoder']))
        end = model.bbox_head(model.neck(feats))
    assert max(rel_diff(a, b) for a, b in zip(want['backbone'], feats)) \
        <= TOL
    assert rel_diff(want['pred_logits'], got['logits'][0]) <= TOL
    assert rel_diff(want['pred_boxes'], got['boxes'][0]) <= TOL
    assert matched_diff(want['pred_logits'][0], want['pred_boxes'][0],
                        end['logits'][0, 0], end['boxes'][0, 0]) <= TOL


# -- which weights ------------------------------------------------------------
def test_ema_weights_are_preferred():
    raw, ema = official(18, 3, 0).state_dict(), official(18, 3, 1).state_dict()
    key = 'decoder.enc_score_head.weight'
    ckpt = {'model': raw, 'ema': {'module': ema, 'updates': 3}}
    auto = convert_rtdetr(ckpt)
    assert auto.source == 'ema.module'
    assert torch.equal(auto.state['bbox_head.transformer.enc_score_head.'
                                  'weight'], ema[key])
    plain = convert_rtdetr(ckpt, weights='model')
    assert plain.source == 'model'
    assert torch.equal(plain.state['bbox_head.transformer.enc_score_head.'
                                   'weight'], raw[key])
    with pytest.raises(CheckpointError, match='no EMA'):
        convert_rtdetr({'model': raw}, weights='ema')


# -- the ImageNet backbone file -----------------------------------------------
def test_backbone_file_drops_fc_and_fills_counters(tmp_path):
    from mmsparx.models.backbones import PResNet
    ref = official(18, 3)
    bare = {k[len('backbone.'):]: v for k, v in ref.state_dict().items()
            if k.startswith('backbone.') and
            not k.endswith('num_batches_tracked')}  # as frozen norms save
    bare.update({'fc.weight': torch.randn(1000, 512),
                 'fc.bias': torch.randn(1000)})
    assert layout(bare) == 'backbone'
    conv = convert_rtdetr(bare)
    assert conv.kind == 'backbone' and conv.dropped == ['fc.bias',
                                                        'fc.weight']
    # 23 BNs: stem 3, 8 blocks x 2, 4 projection shortcuts
    assert len(conv.filled) == 23 and conv.settings['depth'] == 18
    backbone = PResNet(18).eval()
    backbone.load_state_dict(conv.state, strict=True)
    # the official classification model nests it: backbone.* + head.*
    nested = {'backbone.' + k: v for k, v in bare.items()
              if not k.startswith('fc.')}
    nested['head.fc.weight'] = torch.zeros(10, 512)
    again = convert_rtdetr(nested)
    assert again.kind == 'backbone' and again.dropped == ['head.fc.weight']
    assert set(again.state) == set(conv.state)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert max(max_diff(a, b) for a, b in
                   zip(ref.backbone(x), backbone(x))) <= TOL


def test_converted_backbone_file_loads_through_init_cfg(tmp_path):
    src, dst = tmp_path / 'ResNet34_vd.pth', tmp_path / 'presnet34.pth'
    ref = official(34, 4)
    torch.save({k[len('backbone.'):]: v for k, v in ref.state_dict().items()
                if k.startswith('backbone.')}, src)
    from mmsparx.models.backbones import PResNet
    sys.path.insert(0, osp.join(ROOT, 'tools', 'model_converters'))
    try:
        import rtdetr as tool
    finally:
        sys.path.pop(0)
    tool.convert_file(str(src), str(dst))
    backbone = PResNet(34, init_cfg=dict(type='Pretrained',
                                         checkpoint=str(dst)))
    backbone.init_weights()
    state = backbone.state_dict()
    assert all(torch.equal(state[k[len('backbone.'):]], v)
               for k, v in ref.state_dict().items()
               if k.startswith('backbone.'))
