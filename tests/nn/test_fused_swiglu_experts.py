import pytest
import torch
from torch import nn

import covft.nn._expert_ops as experts_module
from covft.nn import FusedSwiGLUExperts, fused_swiglu_experts

E, D, H, B, N = 3, 8, 16, 2, 5
NAMES = ("x", "gates", "gate_weight", "gate_bias", "up_weight", "up_bias", "down_weight", "down_bias")
ACTIVATIONS = {
    "silu": nn.SiLU,  # SwiGLU, closed-form derivative
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GeGLU, closed-form derivative
    "tanh": nn.Tanh,  # any other activation: derivative through autograd
}


def _inputs(dtype=torch.float32, seed=0, bias=True, experts=E, dim=D, hidden=H, batch=B, tokens=N):
    """x, gates and the experts' parameters (biases ``None`` without ``bias``), all requiring grad."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, dtype=dtype) * scale

    x = randn(batch, tokens, dim)
    gates = randn(batch, experts).softmax(-1)
    gate_weight, up_weight = (
        randn(experts, hidden, dim, scale=dim**-0.5),
        randn(experts, hidden, dim, scale=dim**-0.5),
    )
    down_weight = randn(experts, hidden, dim, scale=hidden**-0.5)  # down_proj.weight transposed
    biases = [randn(experts, hidden), randn(experts, hidden), randn(experts, dim)] if bias else [None] * 3
    tensors = [x, gates, gate_weight, biases[0], up_weight, biases[1], down_weight, biases[2]]
    return [None if t is None else t.requires_grad_() for t in tensors]


def _grads(fn, inputs, act, grad_out):
    out = fn(*inputs, act)
    return out, torch.autograd.grad(out, [t for t in inputs if t is not None], grad_out)


def _assert_matches_loop(inputs, act, reference, seed=1):
    x = inputs[0]
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    out, grads = _grads(fused_swiglu_experts, inputs, act, grad_out)
    ref_out, ref_grads = _grads(reference, inputs, act, grad_out)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref_out, atol=1e-5 * max(ref_out.abs().max().item(), 1.0), rtol=1e-5)
    names = [name for name, t in zip(NAMES, inputs, strict=True) if t is not None]
    assert len(grads) == len(ref_grads) == len(names)
    for name, grad, ref in zip(names, grads, ref_grads, strict=True):
        assert grad.shape == ref.shape, name
        torch.testing.assert_close(
            grad, ref, atol=1e-5 * max(ref.abs().max().item(), 1.0), rtol=1e-5, msg=name
        )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
@pytest.mark.parametrize("chunk_bytes", [None, 3 * H * 4 * E])  # one chunk / several uneven row chunks
def test_fused_matches_reference_loop_forward_and_every_gradient(
    bias, act_name, chunk_bytes, reference_swiglu_experts, monkeypatch
):
    if chunk_bytes is not None:
        monkeypatch.setattr(experts_module, "_CPU_CHUNK_BYTES", chunk_bytes)
    _assert_matches_loop(_inputs(bias=bias), ACTIVATIONS[act_name](), reference_swiglu_experts)


def test_fused_matches_reference_loop_at_a_realistic_size(reference_swiglu_experts):
    # Qwen2.5-VL's vision MLP ratio (d=1280, h=3420) scaled down by 16, E=4, 3 samples of 200
    # tokens: 600 rows in chunks of 306 at the default chunk size.
    inputs = _inputs(seed=2, experts=4, dim=80, hidden=214, batch=3, tokens=200)
    _assert_matches_loop(inputs, nn.SiLU(), reference_swiglu_experts, seed=3)


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(bias):
    inputs = _inputs(dtype=torch.float64, bias=bias, experts=2, dim=3, hidden=4, batch=2, tokens=3)
    present = [t for t in inputs if t is not None]

    def fn(*tensors):
        it = iter(tensors)
        return fused_swiglu_experts(*[None if t is None else next(it) for t in inputs], nn.SiLU())

    assert torch.autograd.gradcheck(fn, present)


def test_gradcheck_float64_with_row_chunks_and_autograd_activation(monkeypatch):
    monkeypatch.setattr(experts_module, "_CPU_CHUNK_BYTES", 2 * 4 * 2 * 8)  # 2 rows per chunk
    inputs = _inputs(dtype=torch.float64, experts=2, dim=3, hidden=4, batch=2, tokens=3)
    assert torch.autograd.gradcheck(lambda *args: fused_swiglu_experts(*args, nn.Tanh()), inputs)


def test_only_x_gate_and_up_outputs_gates_and_weights_are_saved_for_backward():
    inputs = _inputs()
    x, gates, gate_weight, _, up_weight, _, down_weight, down_bias = inputs
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused_swiglu_experts(*inputs, nn.SiLU())
    by_storage = {t.untyped_storage().data_ptr(): t for t in saved}
    weights = {t.untyped_storage().data_ptr() for t in (gate_weight, up_weight, down_weight, down_bias)}
    activations = [t for ptr, t in by_storage.items() if ptr not in weights]
    shapes = sorted(tuple(t.shape) for t in activations)
    assert shapes == sorted([(B, N, D), (B * N, E * H), (B * N, E * H), (B, E)])
    assert weights <= set(by_storage)


@pytest.mark.parametrize(
    "trainable",
    [("x",), ("gates",), ("gate_weight",), ("up_bias",), ("down_weight",), ("gate_bias", "down_bias")],
)
def test_partial_requires_grad(trainable, reference_swiglu_experts):
    inputs = [t.detach().requires_grad_(name in trainable) for name, t in zip(NAMES, _inputs(), strict=True)]
    chosen = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(fused_swiglu_experts(*inputs, nn.SiLU()).sum(), chosen)
    ref = torch.autograd.grad(reference_swiglu_experts(*inputs, nn.SiLU()).sum(), chosen)
    for grad, expected in zip(grads, ref, strict=True):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_upcycled_experts_compute_the_source_mlp_for_any_gates_summing_to_one(bias, tiny_swiglu_mlp):
    mlp = tiny_swiglu_mlp if bias else type(tiny_swiglu_mlp)(16, 40, bias=False)
    experts = FusedSwiGLUExperts.from_linear(
        mlp.gate_proj, mlp.up_proj, mlp.down_proj, mlp.act_fn, num_experts=4
    )
    assert experts.act is mlp.act_fn
    for e in range(4):
        assert torch.equal(experts.gate_weight[e], mlp.gate_proj.weight)
        assert torch.equal(experts.up_weight[e], mlp.up_proj.weight)
        assert torch.equal(experts.down_weight[e].t(), mlp.down_proj.weight)
        if bias:
            assert torch.equal(experts.gate_bias[e], mlp.gate_proj.bias)
            assert torch.equal(experts.up_bias[e], mlp.up_proj.bias)
            assert torch.equal(experts.down_bias[e], mlp.down_proj.bias)
    names = {name for name, _ in experts.named_parameters()}
    biases = {"gate_bias", "up_bias", "down_bias"}
    assert names == {"gate_weight", "up_weight", "down_weight"} | (biases if bias else set())
    x = torch.randn(3, 7, 16)
    dense = torch.randn(3, 4).softmax(-1)
    one_hot = torch.eye(4)[[2, 0, 3]]
    sparse = torch.tensor([[0.3, 0.0, 0.7, 0.0], [0.0, 0.5, 0.0, 0.5], [0.1, 0.2, 0.3, 0.4]])
    for gates in (dense, one_hot, sparse):
        torch.testing.assert_close(experts(x, gates), mlp(x), atol=1e-6, rtol=1e-5)
    # Copies, not views: changing one expert leaves the source MLP and the other experts alone.
    with torch.no_grad():
        experts.up_weight[0] += 1.0
    assert not torch.equal(experts.up_weight[0], mlp.up_proj.weight)
    assert torch.equal(experts.up_weight[1], mlp.up_proj.weight)


def test_from_linear_with_a_partial_bias_uses_zeros_and_rejects_non_mlp_triples():
    gate, up, down = nn.Linear(D, H), nn.Linear(D, H, bias=False), nn.Linear(H, D, bias=False)
    experts = FusedSwiGLUExperts.from_linear(gate, up, down, nn.SiLU(), num_experts=2)
    assert torch.equal(experts.gate_bias[1], gate.bias)
    assert torch.count_nonzero(experts.up_bias) == 0 and torch.count_nonzero(experts.down_bias) == 0
    with pytest.raises(ValueError, match=r"do not form a gated MLP.*up_proj 8->17"):
        FusedSwiGLUExperts.from_linear(gate, nn.Linear(D, H + 1), down, nn.SiLU(), num_experts=2)
    with pytest.raises(ValueError, match=r"do not form a gated MLP.*down_proj 16->9"):
        FusedSwiGLUExperts.from_linear(gate, up, nn.Linear(H, D + 1), nn.SiLU(), num_experts=2)


def test_constructor_defaults_to_silu_with_biases_and_can_drop_them():
    torch.manual_seed(0)
    experts = FusedSwiGLUExperts(E, D, H, dtype=torch.float64)
    assert isinstance(experts.act, nn.SiLU)
    assert experts.gate_weight.shape == experts.up_weight.shape == experts.down_weight.shape == (E, H, D)
    assert experts.gate_bias.shape == experts.up_bias.shape == (E, H) and experts.down_bias.shape == (E, D)
    assert experts.gate_weight.dtype == torch.float64
    assert experts.gate_weight.abs().max() <= 1 / D**0.5 and experts.down_weight.abs().max() <= 1 / H**0.5
    assert not torch.equal(experts.up_weight[0], experts.up_weight[1])
    assert "num_experts=3, dim=8, hidden_dim=16, bias=True" in repr(experts)
    no_bias = FusedSwiGLUExperts(E, D, H, bias=False)
    assert no_bias.gate_bias is None and no_bias.up_bias is None and no_bias.down_bias is None
    assert sum(p.numel() for p in no_bias.parameters()) == 3 * E * H * D
    with pytest.raises(ValueError, match="must be positive"):
        FusedSwiGLUExperts(0, D, H)


def test_shape_and_activation_errors():
    inputs = [t.detach() for t in _inputs()]
    x = inputs[0]
    with pytest.raises(ValueError, match=r"gates must have shape \(2, 3\)"):
        fused_swiglu_experts(x, torch.ones(B, E + 1), *inputs[2:], nn.SiLU())
    with pytest.raises(ValueError, match=r"up_bias must have shape \(3, 16\)"):
        fused_swiglu_experts(*inputs[:5], torch.ones(E, H + 1), *inputs[6:], nn.SiLU())
    with pytest.raises(ValueError, match=r"gate_weight must be \[E, h, d\]"):
        fused_swiglu_experts(x, inputs[1], inputs[2][0], *inputs[3:], nn.SiLU())
    with pytest.raises(ValueError, match="out-of-place"):
        fused_swiglu_experts(*inputs, nn.SiLU(inplace=True))


@pytest.mark.parametrize("name", ["silu", "swish"])
def test_hugging_face_silu_takes_the_closed_form_backward_and_matches_the_loop(
    name, reference_swiglu_experts
):
    activations = pytest.importorskip("transformers.activations")
    act = activations.ACT2FN[name]
    assert experts_module._activation_kind(act) == "silu"  # Qwen2.5-VL's act_fn hits the fast path
    _assert_matches_loop(_inputs(seed=3), act, reference_swiglu_experts, seed=4)
