"""What SparX-Mamba keeps for backward: the 1x1 product Functions that keep
one map where autograd kept two (GELU / GroupNorm recomputed in backward)
and no per-image copy of the weight under autocast; their gradients
against PyTorch's, and the bytes a training step saves."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from mmsparx.models.backbones import SparXMamba
from mmsparx.models.layers import pointwise
from mmsparx.models.layers.pointwise import (_NormPointwiseFn, PointwiseConv,
                                             _PointwiseFn)

TINY = dict(depths=(1, 2, 3, 2), channels=(16, 32, 48, 64), stem='v2',
            strides=(1, 1, 2, 1), ganglion_start=(None, 1, 0, 0))
ACTS = {0: lambda t: t, 1: F.gelu, 2: F.silu}


def saved_bytes(step) -> int:
    """Bytes of the distinct storages autograd keeps while ``step()`` runs,
    parameters' excluded (each storage counted once)."""
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        params = step()
    for p in params:
        seen.pop(p.untyped_storage().data_ptr(), None)
    return sum(seen.values())


@contextlib.contextmanager
def plain_products():
    """The graph as it was before these Functions: autocast's products
    (batched over the expanded weight), GELU and GroupNorm kept apart."""
    train_dtype, normed = PointwiseConv._train_dtype, PointwiseConv.normed

    def old_dtype(self, x):
        if torch.is_autocast_enabled('cpu'):
            return None
        return train_dtype(self, x)

    PointwiseConv._train_dtype = old_dtype
    PointwiseConv.normed = lambda self, x, norm: self(norm(x))
    try:
        yield
    finally:
        PointwiseConv._train_dtype, PointwiseConv.normed = train_dtype, normed


@pytest.mark.parametrize('act', [0, 1, 2])
@pytest.mark.parametrize('bias', [True, False])
def test_pointwise_fn_gradcheck(act, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) \
        if bias else None
    args = (x, w) + ((b, ) if bias else ())
    assert torch.autograd.gradcheck(
        lambda x, w, *b: _PointwiseFn.apply(x, w, b[0] if b else None, act,
                                            None), args)


@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('bias', [True, False])
def test_norm_pointwise_fn_gradcheck(groups, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    gamma, beta = (torch.randn(4, dtype=torch.float64, requires_grad=True)
                   for _ in range(2))
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) \
        if bias else None
    args = (x, gamma, beta, w) + ((b, ) if bias else ())
    assert torch.autograd.gradcheck(
        lambda x, g, be, w, *b: _NormPointwiseFn.apply(
            x, g, be, w, b[0] if b else None, groups, 1e-5, torch.float64),
        args)


@pytest.mark.parametrize('pixels', [(3, 3), (20, 15)])
@pytest.mark.parametrize('norm', [False, True])
def test_narrow_products_match_float64(pixels, norm):
    """The autocast branches (products in a narrower dtype than the
    weight; both weight-gradient forms: folded over the batch at 3x3,
    per image at 20x15) against plain float64 autograd."""
    torch.manual_seed(0)
    x = torch.randn(3, 6, *pixels, dtype=torch.float64)
    gamma, beta = torch.randn(6, dtype=torch.float64), \
        torch.randn(6, dtype=torch.float64)
    w = torch.randn(5, 6, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    upstream = torch.randn(3, 5, *pixels, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (x, gamma, beta, w, b)]
    refs = [t.clone().requires_grad_(True) for t in (x, gamma, beta, w, b)]
    if norm:
        out = _NormPointwiseFn.apply(*leaves, 2, 1e-5, torch.float32)
        ref = F.conv2d(F.group_norm(refs[0], 2, refs[1], refs[2]),
                       refs[3].view(5, 6, 1, 1), refs[4])
    else:
        leaves[0] = leaves[0].float().detach().requires_grad_(True)
        out = _PointwiseFn.apply(leaves[0].flatten(2), leaves[3], leaves[4],
                                 1, torch.float32).view(3, 5, *pixels)
        ref = F.conv2d(F.gelu(refs[0]), refs[3].view(5, 6, 1, 1), refs[4])
    assert out.dtype == torch.float32
    (out * upstream.float()).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    used = (0, 1, 2, 3, 4) if norm else (0, 3, 4)
    for i in used:
        assert leaves[i].grad.dtype == leaves[i].dtype
        torch.testing.assert_close(leaves[i].grad.double(), refs[i].grad,
                                   rtol=1e-4, atol=1e-4)


def _tiny_step(model, x, amp):
    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            outs = model(x)
            return sum(o.float().mean() for o in outs)
    return step


@pytest.mark.parametrize('amp', [False, True])
def test_same_outputs_and_gradients_as_the_plain_graph(amp):
    """SparX-Mamba's training step with the Functions against the graph
    without them: float32 equal to rounding, bfloat16 autocast no further
    from a float32 reference than the plain graph was."""
    torch.manual_seed(0)
    model = SparXMamba(TINY, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 64, 64)

    def grads(amp, plain):
        model.zero_grad()
        with plain_products() if plain else contextlib.nullcontext():
            loss = _tiny_step(model, x, amp)()
            loss.backward()
        return loss.detach(), torch.cat(
            [p.grad.flatten() for p in model.parameters()])

    loss, new = grads(amp, False)
    plain_loss, plain = grads(amp, True)
    if not amp:
        torch.testing.assert_close(loss, plain_loss)
        torch.testing.assert_close(new, plain, rtol=1e-4, atol=1e-6)
        return
    torch.testing.assert_close(loss, plain_loss, rtol=2e-2, atol=2e-3)
    _, ref = grads(False, False)

    def error(g):
        return float((g - ref).norm() / ref.norm())

    assert error(new) <= 1.1 * error(plain) + 1e-3, (error(new),
                                                     error(plain))


@pytest.mark.parametrize('amp,bound', [(True, 0.9), (False, 0.93)])
def test_a_training_step_saves_less(amp, bound):
    """The tiny SparX-Mamba (2 x 128 x 128): at most 90% of the plain
    graph's saved bytes under bfloat16 autocast (no batch-sized weight
    copies, GELU and the GroupNorms into the products; 88% measured, its
    weights are small), 93% in float32 (the GroupNorms; 92%)."""
    torch.manual_seed(0)
    model = SparXMamba(TINY, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 128, 128)
    step = _tiny_step(model, x, amp)

    def run():
        step()
        return list(model.parameters())

    new = saved_bytes(run)
    with plain_products():
        plain = saved_bytes(run)
    assert new <= bound * plain, (new, plain)


def test_sparx_mamba_t_saves_at_most_1_5x_swin_t():
    """SparX-Mamba-T's classifier training step under bfloat16 autocast
    (2 x 224 x 224, loss as mmpretrain computes it): at most 129 MiB per
    image kept for backward, 1.5x mmpretrain's Swin-T (86 MiB measured
    the same way; this graph kept 154 before)."""
    from mmpretrain.structures import DataSample

    from mmsparx.models.variants import build_classifier
    torch.manual_seed(0)
    model = build_classifier('sparx-mamba-t').train()
    images = torch.randn(2, 3, 224, 224)
    samples = [DataSample().set_gt_label(label) for label in (1, 2)]

    def run():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model(images, samples, mode='loss')
        return list(model.parameters())

    per_image = saved_bytes(run) / 2 / 2**20
    assert per_image <= 129, per_image


def test_pointwise_train_dtype():
    conv = PointwiseConv(4, 8)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    assert conv._train_dtype(x) == torch.float32
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert conv._train_dtype(x) == torch.bfloat16
        # Small maps keep the folded product of the whole batch.
        assert conv._train_dtype(x[:, :, :8, :8]) is None
    with torch.no_grad():
        assert conv._train_dtype(x) is None
    assert conv._train_dtype(x.double()) is None
    assert pointwise.FOLD_WEIGHT_GRAD_PIXELS == 14 * 14
