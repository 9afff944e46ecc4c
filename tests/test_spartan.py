"""SpaRTAN: exact sizes and FLOPs, the wave CMixer's F_max gather and
float32 modulation, backbone behaviour and the authors'-layout converter."""
import pytest
import torch

from conftest import SPARTAN_TINY as TINY
from conftest import official_state_dict
from mmsparx.fileio import load_state_dict
from mmsparx.converters import convert_spartan, is_spartan_layout
from mmsparx.converters.spartan import arch_name, infer_arch, layer_plan
from mmsparx.models.backbones import SpaRTAN
from mmsparx.models.layers import (SMixer, SpaRTANBlock, SqueezeExcite,
                                   WaveCMixer)
from mmsparx.models.layers import spartan as spartan_layers
from mmsparx.models.variants import build_classifier

KEY_FILES = {'t': 'spartan_T_shipped', 'xt': 'spartan_XT_tableI'}


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('variant,params,backbone,entries', [
    ('t', 3_820_296, 3_563_296, 1012), ('xt', 2_222_792, 2_029_792, 914)])
def test_sizes_equal_the_authors_models(variant, params, backbone, entries):
    model = build_classifier(f'spartan-{variant}')
    assert n_params(model) == params
    assert n_params(model.backbone) == backbone
    assert len(model.state_dict()) == entries


def test_table_viii_conv_types_are_configs():
    # XT widths with full (F), depthwise (D) and hybrid (H) convs: the
    # paper's 3.3 M, 2.2 M and 2.2 M (1000-class head included).
    head = 192 * 1000 + 1000
    counts = {}
    for name, types in (('F', ('F', ) * 4), ('D', ('D', ) * 4),
                        ('H', ('F', 'F', 'D', 'D'))):
        arch = dict(channels=(32, 64, 96, 192), depths=(3, 3, 10, 2),
                    expand_ratios=(4, 4, 2, 2), conv_types=types)
        counts[name] = n_params(SpaRTAN(arch, out_norm=None)) + head
    assert counts == {'F': 3_300_200, 'D': 2_154_104, 'H': 2_222_792}
    assert [round(counts[k] / 1e6, 1) for k in 'FDH'] == [3.3, 2.2, 2.2]


def test_fmax_gather_picks_the_argmax_channel():
    # x: per pixel, the largest channel is 2, 0, 1, 2 (row-major).
    x = torch.tensor([[[[0.1, 5.0], [0.0, -1.0]],
                       [[0.2, 1.0], [3.0, -2.0]],
                       [[0.9, 2.0], [1.0, -0.5]]]])
    # theta: channel c at pixel p holds 10 * c + p, so the value names both.
    theta = (10 * torch.arange(6.).view(1, 6, 1, 1)
             + torch.arange(4.).view(1, 1, 2, 2))
    picked, = spartan_layers.gather_fmax(x, theta)
    assert picked.shape == (1, 1, 2, 2)
    assert picked.flatten().tolist() == [20.0, 1.0, 12.0, 23.0]


def test_wave_superposes_at_fmax_then_modulates():
    """W(X) against an explicit per-pixel computation."""
    torch.manual_seed(0)
    mixer = WaveCMixer(4, 2).eval()
    x = torch.randn(2, 4, 3, 5)
    theta = torch.nn.functional.gelu(mixer.theta(x))
    amp = mixer.proj(x)
    weight = torch.view_as_complex(mixer.complex[0, 0, 0].detach())
    expected = torch.empty(2, 8, 3, 5)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                c = int(x[b, :, i, j].argmax())
                feat = amp[b, :, i, j] * theta[b, :, i, j] + \
                    amp[b, c, i, j] * theta[b, c, i, j]
                # The authors' channels-last complex view: pairs (2k, 2k+1).
                wave = torch.view_as_complex(feat.view(4, 2)) * weight
                expected[b, :, i, j] = torch.view_as_real(wave).flatten()
    with torch.no_grad():
        torch.testing.assert_close(mixer.wave(x), expected)


def test_complex_modulation_stays_float32_under_bfloat16_autocast(
        monkeypatch):
    seen = []
    original = spartan_layers.complex_modulation

    def spy(feat, weight):
        out = original(feat, weight)
        seen.append((feat.dtype, out.dtype))
        return out

    monkeypatch.setattr(spartan_layers, 'complex_modulation', spy)
    torch.manual_seed(0)
    model = SpaRTAN(TINY).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(2, 3, 64, 64))
        loss = sum(o.float().mean() for o in outs)
    loss.backward()
    assert len(seen) == sum(TINY['depths'])
    assert all(d == (torch.float32, torch.float32) for d in seen)
    assert all(o.dtype == torch.bfloat16 or o.dtype == torch.float32
               for o in outs)
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # The product itself is exact in float32 for bfloat16 inputs.
    feat = torch.randn(1, 8, 2, 2).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = original(feat, torch.randn(1, 1, 1, 4, 2))
    assert out.dtype == torch.float32


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (3, ), (1, 2), (-1, )])
@pytest.mark.parametrize('size', [(64, 64), (33, 47), (45, 30)])
def test_output_shapes(out_indices, size):
    model = SpaRTAN(TINY, out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    expected = []
    for i in sorted(j % 4 for j in out_indices):
        h, w = size
        for _ in range(i + 2):
            h, w = (h + 1) // 2, (w + 1) // 2
        expected.append((1, TINY['channels'][i], h, w))
    assert [tuple(o.shape) for o in outs] == expected


@pytest.mark.parametrize('size,expected', [
    ((33, 47), [(9, 12), (5, 6), (3, 3), (2, 2)]),
    ((112, 137), [(28, 35), (14, 18), (7, 9), (4, 5)]),
    ((17, 17), [(5, 5), (3, 3), (2, 2), (1, 1)])])
def test_real_variant_on_odd_sizes(size, expected):
    model = SpaRTAN('t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (c, h, w) for c, (h, w) in zip((32, 64, 128, 256), expected)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_even_sizes_need_no_padding():
    # Even maps reach the 2x2 convs unpadded: the authors' computation.
    model = SpaRTAN(TINY, out_indices=(1, )).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        stage1 = model.stages[0](model.stem(x))
        down = model.downsamples[1]
        direct = down.act(down.norm(down.conv(stage1)))
        torch.testing.assert_close(down(stage1), direct)


def test_bad_arguments_name_the_fix():
    with pytest.raises(KeyError, match=r"valid names: \['t', 'tiny', 'x-tiny"):
        SpaRTAN('small')
    with pytest.raises(KeyError, match='lacks'):
        SpaRTAN(dict(channels=(8, 16, 24, 32)))
    with pytest.raises(KeyError, match="unknown arch keys \\['widths'\\]"):
        SpaRTAN(dict(TINY, widths=1))
    with pytest.raises(ValueError, match="'F' \\(full\\) or 'D'"):
        SpaRTAN(dict(TINY, conv_types=('F', 'H', 'D', 'D')))
    with pytest.raises(ValueError, match='needs 4 entries'):
        SpaRTAN(dict(TINY, depths=(1, 1, 1)))
    with pytest.raises(ValueError, match='even and >= 8'):
        SpaRTAN(dict(TINY, channels=(8, 16, 25, 32)))
    with pytest.raises(ValueError, match='unknown activation'):
        SpaRTAN(dict(TINY, stem_act='Mish'))
    with pytest.raises(ValueError, match='out_indices'):
        SpaRTAN(TINY, out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        SpaRTAN(TINY, frozen_stages=5)
    with pytest.raises(ValueError, match='out_norm'):
        SpaRTAN(TINY, out_norm='bn')
    assert SpaRTAN('XT', out_norm=None).arch['channels'] == (32, 64, 96, 192)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)  # no drop path decision zeroes a block for both
    model = SpaRTAN(TINY, drop_path_rate=0.1).train()
    # An SE's ReLU can be dead for the whole batch at init (its input, a
    # GAP after BN + GELU, barely varies): open them so that a zero
    # gradient can only mean a broken path.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SqueezeExcite):
                module.squeeze.bias.fill_(1.0)
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or
               not torch.isfinite(p.grad).all() or not p.grad.abs().sum()]
    assert not missing
    # The hybrid layout: full convs in stages 1-2, depthwise in 3-4.
    assert model.stages[0].blocks[0].smixer.h_conv.conv.groups == 1
    assert model.stages[2].blocks[0].smixer.h_conv.conv.groups == 12
    assert model.stages[0].blocks[0].cmixer.conv.conv.groups == 32
    assert model.stages[2].blocks[0].cmixer.conv.conv.groups == 24


def test_block_is_the_papers_residual_form():
    """With scales 1 and no drop path: Y = X + SMixer(GN X),
    Z = Y + CMixer(GN Y) (eqs. 1-2)."""
    torch.manual_seed(0)
    block = SpaRTANBlock(16, 2, 'F', layer_scale_init=1.0).eval()
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        y = x + block.smixer(block.norm_1(x))
        z = y + block.cmixer(block.norm_2(y))
        torch.testing.assert_close(block(x), z)
    assert isinstance(block.smixer, SMixer)
    fresh = SpaRTANBlock(16, 2)
    for scale in (fresh.scale_1, fresh.scale_2, fresh.smixer.gamma):
        assert torch.equal(scale, torch.full_like(scale, 1e-5))


def test_feature_decomposition_reweights_the_deviation_from_gap():
    torch.manual_seed(0)
    mixer = SMixer(8).eval()
    with torch.no_grad():
        mixer.gamma.fill_(0.5)
        x = torch.randn(1, 8, 4, 4)
        local = mixer.proj_in(x)
        expected = local + 0.5 * (local - local.mean((2, 3), keepdim=True))
        torch.testing.assert_close(mixer.feature_decomposition(x), expected)


def test_frozen_stages_stay_frozen_and_in_eval():
    model = SpaRTAN(TINY, frozen_stages=2, norm_eval=False)
    model.train()
    for module in (model.stem, model.stages[0], model.stages[1],
                   model.downsamples[1]):
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    assert model.stages[2].training and model.downsamples[2].training
    assert all(p.requires_grad for p in model.stages[2].parameters())
    before = model.stem[0].conv.weight.clone()
    stats = model.stem[0].norm.running_mean.clone()
    outs = model(torch.randn(2, 3, 64, 64))
    outs[-1].mean().backward()
    assert model.stem[0].conv.weight.grad is None
    assert model.stages[1].blocks[0].cmixer.complex.grad is None
    assert model.stages[2].blocks[0].cmixer.complex.grad is not None
    torch.testing.assert_close(model.stem[0].conv.weight, before)
    torch.testing.assert_close(model.stem[0].norm.running_mean, stats)


def test_norm_eval_keeps_batchnorm_in_eval():
    model = SpaRTAN(TINY, norm_eval=True).train()
    bns = [m for m in model.modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.stages[0].blocks[0].norm_1.training  # GroupNorm untouched


def test_with_cp_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = SpaRTAN(TINY, drop_path_rate=0.1)
    cp = SpaRTAN(TINY, drop_path_rate=0.1, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 48, 48)
    torch.manual_seed(1)
    a = plain(x)
    torch.manual_seed(1)
    b = cp(x)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)
    sum(o.sum() for o in a).backward()
    sum(o.sum() for o in b).backward()
    for (name, p), q in zip(plain.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_with_cp_recomputes_blocks_after_a_frozen_stem():
    model = SpaRTAN(TINY, frozen_stages=0, with_cp=True).train()
    calls = []
    # A pre-hook: recomputation stops as soon as the saved tensors are back,
    # so a block's post-forward hooks do not run a second time.
    model.stages[0].blocks[0].smixer.register_forward_pre_hook(
        lambda *args: calls.append(1))
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert len(calls) == 2  # forward, then again during backward
    assert model.stages[0].blocks[0].scale_1.grad is not None
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 3  # no checkpoint without autograd


def test_layer_depth_for_layer_decay():
    model = SpaRTAN('xt')
    total = 3 + 3 + 10 + 2 + 2
    assert model.get_layer_depth('backbone.stem.0.conv.weight',
                                 'backbone.') == (0, total)
    assert model.get_layer_depth('backbone.stages.0.blocks.2.gamma',
                                 'backbone.') == (3, total)
    assert model.get_layer_depth('backbone.downsamples.2.conv.weight',
                                 'backbone.') == (7, total)
    assert model.get_layer_depth('backbone.stages.3.blocks.1.scale_1',
                                 'backbone.') == (18, total)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (
        total - 1, total)


@pytest.mark.parametrize('variant', ['t', 'xt'])
def test_converter_round_trips_the_authors_layout(variant):
    official = official_state_dict(KEY_FILES[variant])
    assert is_spartan_layout(official)
    # The authors' files wrap the weights: {epoch, config, model, ...}.
    converted = convert_spartan({'epoch': 299, 'model': official})
    model = build_classifier(f'spartan-{variant}')
    assert load_state_dict(model, converted, strict=True).ok
    own = model.state_dict()
    last_down = 20 if variant == 't' else 18
    pairs = {
        'backbone.stem.1.norm.running_var': 'conv.1.norm.running_var',
        'backbone.downsamples.1.conv.weight': 'layers.3.conv.weight',
        'backbone.downsamples.2.norm.bias': 'layers.7.norm.bias',
        'backbone.stages.2.blocks.0.smixer.l_conv.0.conv.weight':
            'layers.8.smixer.l_conv.0.conv.weight',
        'backbone.downsamples.3.conv.weight':
            f'layers.{last_down}.conv.weight',
        'backbone.stages.3.blocks.1.cmixer.complex':
            f'layers.{last_down + 2}.cmixer.complex',
        'head.fc.weight': 'linear.weight',
    }
    for ours, theirs in pairs.items():
        torch.testing.assert_close(own[ours], official[theirs])
    # Every authors' tensor arrives unchanged at its new name.
    assert sorted(v.sum().item() for v in official.values()) == sorted(
        v.sum().item() for v in converted.values())
    assert arch_name(infer_arch(official)) == variant
    assert infer_arch(own) == infer_arch(official)


def test_converter_keeps_other_keys_and_refuses_broken_files():
    official = official_state_dict(KEY_FILES['xt'])
    detector = {'backbone.' + k: v for k, v in official.items()
                if not k.startswith('linear.')}
    detector['decoder.layers.0.weight'] = torch.zeros(1)
    converted = convert_spartan(detector)
    assert 'decoder.layers.0.weight' in converted
    assert 'backbone.stages.2.blocks.9.norm_2.weight' in converted
    truncated = {k: v for k, v in official.items()
                 if not k.startswith('layers.5.')}
    with pytest.raises(ValueError, match=r'layers\.\[5\] are missing'):
        convert_spartan(truncated)
    three_stages = {k: v for k, v in official.items()
                    if not k.startswith(('layers.18.', 'layers.19.',
                                         'layers.20.'))}
    with pytest.raises(ValueError, match='found 3 stages'):
        layer_plan(three_stages)


def test_convert_tool_and_pretrained_init_cfg(tmp_path):
    official = official_state_dict(KEY_FILES['t'])
    src = tmp_path / 'spartan_t_authors.pth'
    torch.save({'epoch': 299, 'model': official}, src)
    from tools.model_converters.spartan import main
    main([str(src), str(tmp_path / 'converted.pth')])
    saved = torch.load(tmp_path / 'converted.pth', weights_only=True)
    assert saved['meta']['arch'] == 't'
    for checkpoint in (src, tmp_path / 'converted.pth'):
        backbone = SpaRTAN(
            't', init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
        backbone.init_weights()
        torch.testing.assert_close(backbone.stem[0].conv.weight,
                                   official['conv.0.conv.weight'])
        torch.testing.assert_close(
            backbone.stages[3].blocks[1].smixer.gamma,
            official['layers.22.smixer.gamma'])
    with pytest.raises(RuntimeError, match='does not fit SpaRTAN'):
        SpaRTAN('xt', init_cfg=dict(type='Pretrained',
                                    checkpoint=str(src))).init_weights()
    other = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, other)
    # The CLI turns these into one line on stderr and exit status 1
    # (tests/test_wrong_checkpoints.py); the errors themselves:
    from tools.model_converters.spartan import convert_file
    with pytest.raises(ValueError, match="not in the authors' SpaRTAN"):
        convert_file(str(other), str(tmp_path / 'out.pth'))
    with pytest.raises(ValueError, match='refusing to overwrite'):
        convert_file(str(src), str(src))


def test_convert_tool_handles_other_sizes(tmp_path, capsys):
    """A size outside Table I (e.g. the public SpaRTAN-S) converts with
    the arch read from its shapes, printed for the user's config."""
    model = SpaRTAN(TINY, out_indices=(3, ), out_norm=None)
    authors = {}
    for key, value in model.state_dict().items():
        parts = key.split('.')
        if parts[0] == 'stem':
            key = 'conv.' + '.'.join(parts[1:])
        authors[key] = value
    # Flatten stages/downsamples into the authors' layers.{k} order.
    flat, index = {}, 0
    for stage in range(4):
        if stage:
            for k, v in authors.items():
                if k.startswith(f'downsamples.{stage}.'):
                    flat[f'layers.{index}.' + k.split('.', 2)[2]] = v
            index += 1
        for block in range(TINY['depths'][stage]):
            prefix = f'stages.{stage}.blocks.{block}.'
            for k, v in authors.items():
                if k.startswith(prefix):
                    flat[f'layers.{index}.' + k[len(prefix):]] = v
            index += 1
    flat.update({k: v for k, v in authors.items() if k.startswith('conv.')})
    flat['linear.weight'] = torch.zeros(10, 32)
    flat['linear.bias'] = torch.zeros(10)
    src = tmp_path / 'custom.pth'
    torch.save({'model': flat}, src)
    from tools.model_converters.spartan import main
    main([str(src), str(tmp_path / 'out.pth')])
    out = capsys.readouterr().out
    assert "arch={'channels': (8, 16, 24, 32)" in out
    assert 'strict load passed' in out


def test_registered_in_every_toolbox():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG
    for registry in (DET, SEG, CLS):
        assert registry.get('SpaRTAN') is SpaRTAN
        backbone = registry.build(dict(type='SpaRTAN', arch=TINY,
                                       out_indices=(2, ))).eval()
        assert backbone(torch.zeros(1, 3, 32, 32))[0].shape == (1, 24, 2, 2)
