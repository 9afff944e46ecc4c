"""SparseSwin: the authors' size and outputs, the converter, the attention
regulariser, the classifier and dense backbones."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import SPARSESWIN_SMALL as SMALL
from conftest import official_shapes
from mmsparx.converters.sparseswin import (convert_sparseswin, detect_layout,
                                           merge_permutation,
                                           to_official_layout)
from mmsparx.models.backbones import SparseSwin, SparseSwinDense
from mmsparx.models.losses import SparTaAttentionLoss, attention_penalty
from mmsparx.models.variants import build_classifier

KEYS = 'sparseswin_public_T_100cls'


def authors_state_dict(seed: int = 0) -> dict:
    """Random tensors in the authors' keys and shapes (spec section 3)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(KEYS).items():
        if key.endswith('relative_position_index'):
            state[key] = torch.randint(0, 169, shape, generator=g)
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


# -- the authors' model ----------------------------------------------------
def test_public_setting_has_the_authors_parameter_count():
    model = build_classifier('sparseswin')
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    backbone = model.backbone
    assert count(model) == 20_287_971
    assert count(backbone.patch_embed) + count(backbone.stages) == 12_151_242
    assert count(backbone.sparta) == 8_084_405
    assert count(backbone.sparta.converter) == 1_779_637
    assert count(backbone.norm) + count(model.head) == 52_324
    assert len(model.state_dict()) == len(official_shapes(KEYS)) == 182


def test_converter_round_trips_the_public_layout_with_a_strict_load():
    from mmsparx.fileio import load_state_dict
    official = authors_state_dict()
    converted = convert_sparseswin(official)
    model = build_classifier('sparseswin')
    report = load_state_dict(model, converted, strict=True)
    assert report.ok and len(report.loaded) == 182
    back = to_official_layout(model.state_dict())
    assert set(back) == set(official)
    for key, value in official.items():
        assert torch.equal(back[key], value), key
    # The merging's channel order changed on the way in.
    ours = model.state_dict()['backbone.stages.0.downsample.reduction.weight']
    assert not torch.equal(ours, official['swin_model.2.reduction.weight'])


def authors_forward(state: dict, x: torch.Tensor, heads: int = 16):
    """The authors' SparseSwin as spec section 3 describes it: torchvision's
    Swin-T features[:6], then conv 3x3 -> lin_t over H*W, pre-norm layers
    (MHSA with qkv bias, MLP with GELU after fc1 and fc2), LN, mean, fc."""
    import torchvision
    swin = torchvision.models.swin_t().features[:6].eval()
    swin.load_state_dict({k[len('swin_model.'):]: v for k, v in state.items()
                          if k.startswith('swin_model.')})
    p = lambda name: state['step4.' + name]  # noqa: E731
    feat = swin(x).permute(0, 3, 1, 2)
    y = F.conv2d(feat, p('convert_token.convert.weight'),
                 p('convert_token.convert.bias'), padding=1).flatten(2)
    t = F.linear(y, p('convert_token.lin_t.weight'),
                 p('convert_token.lin_t.bias')).transpose(1, 2)
    b, n, c = t.shape
    maps = []
    for i in range(2):
        h = F.layer_norm(t, (c, ), p(f'norm1.{i}.weight'),
                         p(f'norm1.{i}.bias'))
        q, k, v = F.linear(h, p(f'mha.{i}.qkv.weight'), p(f'mha.{i}.qkv.bias')
                           ).reshape(b, n, 3, heads, c // heads).permute(
                               2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(c // heads), -1)
        maps.append(attn)
        t = t + F.linear((attn @ v).transpose(1, 2).flatten(2),
                         p(f'mha.{i}.lin.weight'), p(f'mha.{i}.lin.bias'))
        h = F.layer_norm(t, (c, ), p(f'norm2.{i}.weight'),
                         p(f'norm2.{i}.bias'))
        h = F.gelu(F.linear(h, p(f'mlp.{i}.fc1.weight'),
                            p(f'mlp.{i}.fc1.bias')))
        t = t + F.gelu(F.linear(h, p(f'mlp.{i}.fc2.weight'),
                                p(f'mlp.{i}.fc2.bias')))
    out = F.layer_norm(t, (c, ), state['norm.weight'], state['norm.bias'])
    return F.linear(out.mean(1), state['fc_out.weight'],
                    state['fc_out.bias']), maps


def test_converted_weights_give_the_authors_outputs():
    import torchvision
    torch.manual_seed(0)
    swin = torchvision.models.swin_t().features[:6]
    state = {'swin_model.' + k: v for k, v in swin.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    for key, shape in official_shapes(KEYS).items():
        if not key.startswith('swin_model.'):
            state[key] = torch.randn(shape, generator=g) * 0.02
            if 'norm' in key and key.endswith('weight'):
                state[key] += 1
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, expected_maps = authors_forward(state, x)
        model = build_classifier('sparseswin').eval()
        model.load_state_dict(convert_sparseswin(state))
        logits = model(x, mode='tensor')
        _, maps = model.backbone.forward_with_attention(x)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    for ours, theirs in zip(maps, expected_maps):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_merge_permutation_is_torchvisions_channel_order():
    from mmcv.cnn.bricks.transformer import PatchMerging
    from torchvision.models.swin_transformer import \
        PatchMerging as TVPatchMerging
    torch.manual_seed(0)
    theirs = TVPatchMerging(6)
    ours = PatchMerging(6, 12, norm_cfg=dict(type='LN'))
    perm = merge_permutation(6)
    ours.reduction.weight.data = theirs.reduction.weight.data[:, perm]
    ours.norm.weight.data = theirs.norm.weight.data[perm] + 0.5
    theirs.norm.weight.data += 0.5
    ours.norm.bias.data = theirs.norm.bias.data[perm]
    x = torch.randn(2, 8, 10, 6)
    out, hw = ours(x.flatten(1, 2), (8, 10))
    torch.testing.assert_close(out, theirs(x).flatten(1, 2))
    assert hw == (4, 5)


# -- the attention regulariser ----------------------------------------------
def test_attention_penalty_equals_a_hand_computed_value():
    a = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])  # B=1, 1 head, t=2
    b = torch.tensor([[[[-0.5, 1.0], [0.0, 2.0]]]])
    # L2: 0.0625 + 0.5625 + 0.25 + 0.25 = 1.125; 0.25 + 1 + 0 + 4 = 5.25
    assert attention_penalty([a, b], 'l2').item() == pytest.approx(6.375)
    # L1: 2.0 and 0.5 + 1 + 0 + 2 = 3.5
    assert attention_penalty([a, b], 'l1').item() == pytest.approx(5.5)
    loss = SparTaAttentionLoss('l2', loss_weight=1e-4)
    assert loss([a, b]).item() == pytest.approx(6.375e-4)
    batch = torch.cat([a, a])  # the authors sum the batch too
    assert loss([batch]).item() == pytest.approx(2.25e-4)
    mean = SparTaAttentionLoss('l2', 1e-4, reduction='batch_mean')
    assert mean([batch]).item() == pytest.approx(1.125e-4)
    zero = SparTaAttentionLoss('l2', loss_weight=0.0)([a, b])
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="mode must be one of"):
        SparTaAttentionLoss('l3')
    with pytest.raises(ValueError, match='no attention maps'):
        attention_penalty([])


def test_l1_on_softmax_attention_is_a_constant():
    # Why the README and a warning steer to L2: each row sums to 1.
    logits = torch.randn(3, 4, 5, 5, requires_grad=True)
    maps = [torch.softmax(logits, -1)]
    penalty = attention_penalty(maps, 'l1')
    assert penalty.item() == pytest.approx(3 * 4 * 5)
    penalty.backward()
    assert logits.grad.abs().max() < 1e-6


def test_classifier_adds_the_regulariser_and_trains_every_parameter():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(
            type='SparseSwinClassifier',
            backbone=dict(type='SparseSwin', arch=SMALL, img_size=64,
                          drop_path_rate=0.0),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=32),
            attn_reg=dict(type='SparTaAttentionLoss', mode='l2',
                          loss_weight=0.5)))
    model.train()
    x = torch.randn(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(i) for i in (0, 2)]
    losses = model(x, samples, mode='loss')
    assert set(losses) == {'loss', 'loss_attn_reg'}
    _, maps = model.backbone.forward_with_attention(x)
    expected = 0.5 * sum((m ** 2).sum() for m in maps)
    torch.testing.assert_close(losses['loss_attn_reg'], expected)
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing
    # The regulariser alone reaches the SparTa attention (qkv), not the head.
    model.zero_grad()
    model(x, samples, mode='loss')['loss_attn_reg'].backward()
    assert model.backbone.sparta.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad is None


def test_classifier_without_attention_maps_says_so():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(TypeError, match='SparTa attention maps'):
            MODELS.build(dict(
                type='SparseSwinClassifier',
                backbone=dict(type='ResNet', depth=18),
                head=dict(type='LinearClsHead', num_classes=3,
                          in_channels=512),
                attn_reg=dict(type='SparTaAttentionLoss')))


def test_classifier_is_registered_in_mmpretrain_only():
    import mmsparx  # noqa: F401
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG
    assert 'SparseSwinClassifier' in CLS.module_dict
    assert 'SparseSwinClassifier' not in DET.module_dict
    assert 'SparseSwinClassifier' not in SEG.module_dict
    for registry in (DET, SEG, CLS):
        assert registry.get('SparseSwinDense') is SparseSwinDense


# -- backbones --------------------------------------------------------------
@pytest.mark.parametrize('size', [(320, 480), (800, 1333), (33, 47)])
def test_dense_maps_at_strides_4_to_32_for_any_size(size):
    model = SparseSwinDense('tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    expected = [(1, c, math.ceil(size[0] / s), math.ceil(size[1] / s))
                for c, s in zip((96, 192, 384, 512), (4, 8, 16, 32))]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_dense_gradients_reach_every_parameter():
    model = SparseSwinDense(SMALL, img_size=64, drop_path_rate=0.1).train()
    outs = model(torch.randn(2, 3, 45, 70))
    assert [tuple(o.shape[2:]) for o in outs] == [(12, 18), (6, 9), (3, 5),
                                                  (2, 3)]
    sum(o.pow(2).mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_dense_out_indices_and_bad_values():
    model = SparseSwinDense(SMALL, out_indices=(1, -1)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16 * 2, 32]
    assert set(model.out_norms) == {'1', '3'}
    with pytest.raises(ValueError, match='out_indices'):
        SparseSwinDense(SMALL, out_indices=(4, ))


def test_classifier_input_size_errors_name_the_fix():
    model = SparseSwin(SMALL, img_size=64).eval()
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 32)
    with pytest.raises(ValueError) as err:
        model(torch.randn(1, 3, 96, 96))
    message = str(err.value)
    for words in ('64x64 inputs', '96x96 input', 'Resize or crop',
                  'resample_tokens=True', 'SparseSwinDense'):
        assert words in message
    resampled = SparseSwin(SMALL, img_size=64, resample_tokens=True)
    resampled.load_state_dict(model.state_dict())
    resampled.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(resampled(x)[0], model(x)[0])
    assert resampled(torch.randn(1, 3, 96, 80))[0].shape == (1, 32)
    raw = SparseSwin(SMALL, img_size=64, out_type='raw').eval()
    assert raw(x)[0].shape == (1, 5, 32)


def test_resampled_token_map_keeps_a_constant_maps_tokens():
    from mmsparx.models.layers import SparseTokenConverter
    torch.manual_seed(0)
    conv = SparseTokenConverter(8, 4, 3, (6, 6), resample=True)
    torch.nn.init.uniform_(conv.to_tokens.weight, 0.0, 1.0)
    constant = torch.ones(1, 4, 6, 6)
    conv.conv = torch.nn.Identity()
    reference = conv(constant)
    for size in ((12, 12), (18, 30), (3, 3)):
        tokens = conv(torch.ones(1, 4, *size))
        # Each token sums its map over the image: the same whatever the grid.
        torch.testing.assert_close(tokens, reference, rtol=0.05, atol=0)
    strict = SparseTokenConverter(8, 4, 3, (6, 6))
    with pytest.raises(ValueError, match='resample=True'):
        strict(torch.ones(1, 8, 7, 7))


def test_frozen_stages_two_is_the_authors_freeze_12():
    model = SparseSwin(SMALL, img_size=64, frozen_stages=2).train()
    frozen = {n.split('.')[0] if not n.startswith('stages') else
              '.'.join(n.split('.')[:3])
              for n, p in model.named_parameters() if not p.requires_grad}
    # torchvision's features[:4]: embedding, stage 1, merging, stage 2.
    assert frozen == {'patch_embed', 'stages.0.blocks', 'stages.0.downsample',
                      'stages.1.blocks'}
    assert not model.stages[1].blocks.training
    assert model.stages[1].downsample.training
    everything = SparseSwinDense(SMALL, frozen_stages=4).train()
    assert not any(p.requires_grad for p in everything.parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        SparseSwin(SMALL, frozen_stages=5)


def test_checkpointing_gives_the_same_outputs():
    torch.manual_seed(0)
    plain = SparseSwinDense(SMALL, drop_path_rate=0.0)
    cp = SparseSwinDense(SMALL, drop_path_rate=0.0, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    for a, b in zip(plain(x), cp(x)):
        torch.testing.assert_close(a, b)


def test_bad_arch_names_the_valid_ones():
    with pytest.raises(KeyError, match="valid names: \\['t', 'tiny'\\]"):
        SparseSwin('huge')
    with pytest.raises(KeyError, match='lacks'):
        SparseSwin(dict(embed_dims=96))
    with pytest.raises(ValueError, match='3 Swin stages'):
        SparseSwin(dict(SMALL, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='divisible'):
        SparseSwin(dict(SMALL, sparta_heads=3))
    with pytest.raises(ValueError, match='out_type'):
        SparseSwin(SMALL, out_type='cls_token')


def test_layer_depth_for_layer_decay():
    model = SparseSwin(SMALL)
    total = 4 + 2 + 2
    names = {'backbone.patch_embed.projection.weight': 0,
             'backbone.stages.0.blocks.0.norm1.weight': 1,
             'backbone.stages.2.blocks.1.norm1.weight': 4,
             'backbone.stages.1.downsample.reduction.weight': 2,
             'backbone.sparta.converter.conv.weight': 5,
             'backbone.sparta.layers.1.attn.qkv.weight': 6,
             'backbone.norm.weight': 7, 'head.fc.weight': 7}
    for name, depth in names.items():
        assert model.get_layer_depth(name, 'backbone.') == (depth, total)


# -- checkpoints -------------------------------------------------------------
def test_pretrained_loads_every_layout(tmp_path):
    import torchvision
    torch.manual_seed(0)
    tv = torchvision.models.swin_t().state_dict()
    torch.save(tv, tmp_path / 'swin_t.pth')
    model = SparseSwin(init_cfg=dict(type='Pretrained',
                                     checkpoint=str(tmp_path / 'swin_t.pth')))
    model.init_weights()
    torch.testing.assert_close(model.stages[2].blocks[5].ffn.layers[1].weight,
                               tv['features.5.5.mlp.3.weight'])
    assert detect_layout(tv) == 'torchvision'

    official = authors_state_dict()
    torch.save(official, tmp_path / 'authors.pt')
    dense = SparseSwinDense(init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'authors.pt')))
    fresh = dense.token_to_space.merge.reduction.weight.clone()
    dense.init_weights()
    torch.testing.assert_close(dense.sparta.layers[1].mlp.fc2.weight,
                               official['step4.mlp.1.fc2.weight'])
    assert not torch.equal(dense.token_to_space.merge.reduction.weight, fresh)

    # The classifier loads a dense file (its extra modules are unused).
    torch.save({'state_dict': {'backbone.' + k: v for k, v in
                               dense.state_dict().items()}},
               tmp_path / 'dense.pth')
    back = SparseSwin(init_cfg=dict(type='Pretrained',
                                    checkpoint=str(tmp_path / 'dense.pth')))
    back.init_weights()
    torch.testing.assert_close(back.norm.weight, dense.norm.weight)


def test_wrong_checkpoints_are_refused_with_the_reason(tmp_path):
    torch.save(authors_state_dict(), tmp_path / 'authors.pt')
    small = SparseSwin(SMALL, img_size=64, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'authors.pt')))
    before = small.sparta.converter.conv.weight.clone()
    with pytest.raises(RuntimeError, match='authors layout.*shape mismatch'
                       '.*Check that arch and img_size'):
        small.init_weights()
    assert torch.equal(small.sparta.converter.conv.weight, before)
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'resnet.pth')
    other = SparseSwin(SMALL, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'resnet.pth')))
    with pytest.raises(ValueError, match='not a SparseSwin or Swin'):
        other.init_weights()


def test_convert_tool_writes_a_strictly_loaded_file(tmp_path):
    from tools.model_converters.sparseswin import convert_file
    torch.save(authors_state_dict(), tmp_path / 'authors.pt')
    # Into a folder that does not exist yet (checkpoints/ in a fresh clone).
    out = tmp_path / 'checkpoints' / 'ours.pth'
    summary = convert_file(str(tmp_path / 'authors.pt'), str(out))
    assert summary['params'] == 20_287_971
    assert summary['img_size'] == (224, 224)
    assert summary['arch']['sparta_depth'] == 2
    assert os.listdir(out.parent) == ['ours.pth']  # no part file left
    saved = torch.load(out, weights_only=False)
    assert len(saved['state_dict']) == 182
    with pytest.raises(ValueError, match='overwrite'):
        convert_file(str(tmp_path / 'authors.pt'),
                     str(tmp_path / 'authors.pt'))
    with pytest.raises(ValueError, match='not in the authors'):
        convert_file(str(out), str(tmp_path / 'x.pth'))
    with pytest.raises(ValueError, match='it is a folder'):
        convert_file(str(tmp_path / 'authors.pt'), str(out.parent))
