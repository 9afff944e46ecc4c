"""torch.compile on every backbone: one whole graph (no break at the C++
kernels, which run as torch.library ops while Dynamo traces) and eager's
outputs and gradients, in training (the kernels' autograd Functions) and
in inference (the fused inference kernels)."""
import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from conftest import SPARSESWIN_SMALL, SPARTAN_TINY
from mmsparx.models.backbones import (PResNet, SparseSwin, SpaRTAN,
                                      SparXMamba, SparXSwin)
from mmsparx.models.layers import SS2D
from mmsparx.ops.kernels import cpu_kernel

# Compilation time grows with the layers traced, so each family gets the
# fewest that still hold every kind of its layers. SparX-Swin keeps two in
# stage 3: the second is the shifted-window ganglion, which reads two
# outputs (the stage input and layer 0's); SparX-Mamba has no shift and
# shares that DMCA, so it takes one layer a stage (normal layers in stages
# 1-2, ganglion layers in 3-4).
SPARX = dict(depths=(1, 1, 2, 1), channels=(16, 32, 48, 64), stem='v2',
             strides=(1, 1, 2, 1), ganglion_start=(None, 1, 0, 0))
# No drop path: eager and compiled calls draw different masks.
BACKBONES = {
    'sparx-mamba': lambda: SparXMamba(dict(SPARX, depths=(1, 1, 1, 1)),
                                      out_indices=(0, 1, 2, 3),
                                      out_norm='gn', drop_path_rate=0.0),
    'sparx-swin': lambda: SparXSwin(
        dict(SPARX, num_heads=(1, 2, 2, 4), window_size=4),
        out_indices=(0, 1, 2, 3), drop_path_rate=0.0),
    # One block a stage: the blocks of a stage are alike (full 3x3
    # convolutions in stages 1-2, depthwise in 3-4).
    'spartan': lambda: SpaRTAN(dict(SPARTAN_TINY, depths=(1, 1, 1, 1)),
                               out_indices=(0, 1, 2, 3),
                               drop_path_rate=0.0),
    # Stage 3 keeps its shifted-window block; one SparTa layer.
    'sparseswin': lambda: SparseSwin(dict(SPARSESWIN_SMALL, sparta_depth=1),
                                     img_size=64, drop_path_rate=0.0),
    'presnet': lambda: PResNet(18, out_indices=(1, 2, 3)),
}
# Stage-1 maps of 16x16: the inference kernels apply from 14x14.
SIZE = 64


def _outputs(model, x):
    out = model(x)
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _step(model, x, call=None):
    """Outputs and parameter gradients of one forward + backward through
    ``call`` (the compiled wrapper, which shares ``model``'s parameters)."""
    outs = _outputs(model if call is None else call, x)
    loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return [o.detach() for o in outs], grads


def _called(gm: torch.fx.GraphModule) -> set:
    """The functions a Dynamo graph calls, its subgraphs' included
    (autograd.Function bodies are subgraphs of the traced module)."""
    return {str(node.target) for sub in gm.modules()
            if isinstance(sub, torch.fx.GraphModule)
            for node in sub.graph.nodes if node.op == 'call_function'}


def _compile_and_run(name: str) -> dict:
    """Compiled and eager outputs (inference) and outputs + gradients
    (training) of backbone ``name``, and what each phase's graph calls."""
    torch.manual_seed(0)
    model = BACKBONES[name]()
    x = torch.randn(2, 3, SIZE, SIZE)
    aot_eager = lookup_backend('aot_eager')
    called = {}
    phase = ['inference']

    def backend(gm, example_inputs):
        called.setdefault(phase[0], set()).update(_called(gm))
        return aot_eager(gm, example_inputs)

    compiled = torch.compile(model, backend=backend, fullgraph=True)
    model.eval()
    with torch.no_grad():  # compiled first: nothing warmed up by eager
        got = _outputs(compiled, x)
        want = _outputs(model, x)
    run = dict(inference=(got, want), called=called)
    model.train()
    phase[0] = 'training'
    want = _step(model, x)
    run['training'] = (_step(model, x, compiled), want)
    return run


@pytest.fixture(scope='module')
def compiled_runs():
    """``_compile_and_run`` once per backbone for the tests that ask."""
    runs = {}

    def get(name: str) -> dict:
        if name not in runs:
            runs[name] = _compile_and_run(name)
        return runs[name]
    return get


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_compiled_backbone_equals_eager(compiled_runs, name):
    run = compiled_runs(name)
    got, want = run['inference']
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    (got, got_grads), (want, want_grads) = run['training']
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key],
                                   rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(cpu_kernel() is None, reason='no CPU kernels built')
def test_the_graph_holds_the_cpu_kernels_as_ops(compiled_runs):
    # The training graph of SparX-Mamba's run in the test above (compiled
    # once for both).
    called = compiled_runs('sparx-mamba')['called']['training']
    ops = {t for t in called if 'mmsparx' in t}
    assert any('cpu_cross_fwd' in t for t in ops), called
    assert any('cpu_dw_act_train' in t for t in ops), called


def test_inductor_runs_ss2d_like_eager():
    # Inductor's generated C++ around the kernels' ops (the cross scan, the
    # depthwise convolution + SiLU): SS2D trained and in inference (16x16
    # maps, where the inference kernel applies). A whole backbone would
    # take minutes of C++ compilation here.
    torch.manual_seed(0)
    layer = SS2D(16).train()
    x = torch.randn(2, 16, 16, 16)
    compiled = torch.compile(layer, fullgraph=True)
    want, want_grads = _step(layer, x)
    got, got_grads = _step(layer, x, compiled)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key],
                                   rtol=1e-3, atol=1e-5, msg=key)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4,
                                   atol=1e-5)
