import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import covft.nn._expert_ops as experts_module
from covft.nn import FusedExperts, FusedSwiGLUExperts, QuickGELU, fused_experts

E, D, H, B, N = 3, 8, 16, 2, 5
NAMES = ("x", "gates", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
ACTIVATIONS = {
    "quick_gelu": QuickGELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu": nn.GELU,
    "identity": nn.Identity,
}
MODULES = {  # both fused expert kinds, for the behaviour they share
    "fc1_fc2": lambda: FusedExperts(E, D, H, QuickGELU()),
    "swiglu": lambda: FusedSwiGLUExperts(E, D, H),
    "swiglu_without_bias": lambda: FusedSwiGLUExperts(E, D, H, bias=False),
}


def _inputs(dtype=torch.float32, seed=0, experts=E, dim=D, hidden=H, batch=B, tokens=N):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim, generator=generator, dtype=dtype)
    gates = torch.randn(batch, experts, generator=generator, dtype=dtype).softmax(-1)
    weights = [
        torch.randn(experts, hidden, dim, generator=generator, dtype=dtype) / dim**0.5,
        torch.randn(experts, hidden, generator=generator, dtype=dtype),
        torch.randn(experts, hidden, dim, generator=generator, dtype=dtype) / hidden**0.5,  # fc2, transposed
        torch.randn(experts, dim, generator=generator, dtype=dtype),
    ]
    return [t.requires_grad_() for t in (x, gates, *weights)]


def _grads(fn, inputs, act, grad_out):
    out = fn(*inputs, act)
    return out, torch.autograd.grad(out, inputs, grad_out)


@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
@pytest.mark.parametrize("chunk_bytes", [None, 3 * H * 4 * E])  # one chunk / several uneven row chunks
def test_fused_matches_reference_loop_forward_and_every_gradient(
    act_name, chunk_bytes, reference_experts, monkeypatch
):
    if chunk_bytes is not None:
        monkeypatch.setattr(experts_module, "_CPU_CHUNK_BYTES", chunk_bytes)
    act = ACTIVATIONS[act_name]()
    inputs = _inputs()
    grad_out = torch.randn(B, N, D, generator=torch.Generator().manual_seed(1))
    out, grads = _grads(fused_experts, inputs, act, grad_out)
    ref_out, ref_grads = _grads(reference_experts, inputs, act, grad_out)
    assert out.shape == (B, N, D)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, grad, ref in zip(NAMES, grads, ref_grads, strict=True):
        assert grad.shape == ref.shape, name
        scale = ref.abs().max().item()
        torch.testing.assert_close(grad, ref, atol=1e-5 * max(scale, 1.0), rtol=1e-5, msg=name)


def test_gradcheck_float64():
    inputs = _inputs(dtype=torch.float64, experts=2, dim=3, hidden=4, batch=2, tokens=3)
    assert torch.autograd.gradcheck(lambda *args: fused_experts(*args, QuickGELU()), inputs)


def test_gradcheck_float64_with_row_chunks(monkeypatch):
    monkeypatch.setattr(experts_module, "_CPU_CHUNK_BYTES", 2 * 4 * 2 * 8)  # 2 rows per chunk
    inputs = _inputs(dtype=torch.float64, experts=2, dim=3, hidden=4, batch=2, tokens=3)
    assert torch.autograd.gradcheck(lambda *args: fused_experts(*args, nn.GELU(approximate="tanh")), inputs)


def test_only_x_fc1_output_gates_and_weights_are_saved_for_backward():
    inputs = _inputs()
    x, gates, w1, b1, w2, b2 = inputs
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused_experts(*inputs, QuickGELU())
    by_storage = {t.untyped_storage().data_ptr(): t for t in saved}
    weights = {t.untyped_storage().data_ptr() for t in (w1, w2, b2)}
    activations = [t for ptr, t in by_storage.items() if ptr not in weights]
    shapes = sorted(tuple(t.shape) for t in activations)
    assert shapes == sorted([(B, N, D), (B * N, E * H), (B, E)])
    assert set(weights) <= set(by_storage)


def test_frozen_experts_get_no_gradient_and_input_gradient_is_right(reference_experts):
    torch.manual_seed(0)
    module = FusedExperts(E, D, H, QuickGELU()).requires_grad_(False)
    x = torch.randn(B, N, D, requires_grad=True)
    gates = torch.softmax(torch.randn(B, E), -1)
    module(x, gates).sum().backward()
    assert all(p.grad is None for p in module.parameters())
    x_ref = x.detach().clone().requires_grad_()
    weights = [module.fc1_weight, module.fc1_bias, module.fc2_weight, module.fc2_bias]
    reference_experts(x_ref, gates, *weights, module.act).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("trainable", [("fc2_weight",), ("gates",), ("fc1_bias", "fc2_bias"), ("x",)])
def test_partial_requires_grad(trainable, reference_experts):
    inputs = [t.detach().requires_grad_(name in trainable) for name, t in zip(NAMES, _inputs(), strict=True)]
    chosen = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(fused_experts(*inputs, QuickGELU()).sum(), chosen)
    ref = torch.autograd.grad(reference_experts(*inputs, QuickGELU()).sum(), chosen)
    for grad, expected in zip(grads, ref, strict=True):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", list(MODULES))
def test_non_reentrant_checkpoint_gives_the_same_gradients(kind):
    torch.manual_seed(0)
    module = MODULES[kind]()
    x = torch.randn(B, N, D, requires_grad=True)
    logits = torch.randn(B, E, requires_grad=True)
    params = [x, logits, *module.parameters()]
    plain = torch.autograd.grad(module(x, logits.softmax(-1)).pow(2).sum(), params)
    checkpointed_out = checkpoint(lambda a, b: module(a, b.softmax(-1)), x, logits, use_reentrant=False)
    checkpointed = torch.autograd.grad(checkpointed_out.pow(2).sum(), params)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


def test_bfloat16_tracks_the_float32_reference(reference_experts):
    inputs32 = _inputs()
    inputs16 = [t.detach().to(torch.bfloat16).requires_grad_() for t in inputs32]
    grad_out = torch.randn(B, N, D, generator=torch.Generator().manual_seed(1))
    out16, grads16 = _grads(fused_experts, inputs16, QuickGELU(), grad_out.bfloat16())
    out32, grads32 = _grads(reference_experts, inputs32, QuickGELU(), grad_out)
    assert out16.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads16)
    torch.testing.assert_close(out16.float(), out32, atol=0.05 * out32.abs().max().item(), rtol=0.02)
    for name, grad, ref in zip(NAMES, grads16, grads32, strict=True):
        torch.testing.assert_close(grad.float(), ref, atol=0.05 * ref.abs().max().item(), rtol=0.05, msg=name)


@pytest.mark.parametrize("kind", list(MODULES))
def test_autocast_computes_in_bfloat16_and_returns_float32_parameter_grads(kind):
    torch.manual_seed(0)
    module = MODULES[kind]()
    x = torch.randn(B, N, D)
    gates = torch.softmax(torch.randn(B, E), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x, gates)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in module.parameters())
    torch.testing.assert_close(out.float(), module(x, gates), atol=0.05, rtol=0.05)


def test_from_linear_copies_weights_and_biases_into_every_expert():
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(D, H), nn.Linear(H, D)
    act = nn.GELU(approximate="tanh")
    module = FusedExperts.from_linear(fc1, fc2, act, num_experts=E)
    assert module.act is act
    assert module.fc1_weight.shape == (E, H, D) and module.fc1_bias.shape == (E, H)
    assert module.fc2_weight.shape == (E, H, D) and module.fc2_bias.shape == (E, D)
    for e in range(E):
        assert torch.equal(module.fc1_weight[e], fc1.weight) and torch.equal(module.fc1_bias[e], fc1.bias)
        assert torch.equal(module.fc2_weight[e].t(), fc2.weight) and torch.equal(module.fc2_bias[e], fc2.bias)
    # With gates summing to one, identical experts compute the source MLP exactly.
    x = torch.randn(B, N, D)
    gates = torch.softmax(torch.randn(B, E), -1)
    torch.testing.assert_close(module(x, gates), fc2(act(fc1(x))), atol=1e-6, rtol=1e-5)
    # Copies, not views: changing one expert leaves the source MLP and the other experts alone.
    with torch.no_grad():
        module.fc1_bias[0] += 1.0
    assert not torch.equal(module.fc1_bias[0], fc1.bias)
    assert torch.equal(module.fc1_bias[1], fc1.bias)


def test_from_linear_without_bias_uses_zeros_and_rejects_non_mlp_pairs():
    fc1, fc2 = nn.Linear(D, H, bias=False), nn.Linear(H, D, bias=False)
    module = FusedExperts.from_linear(fc1, fc2, QuickGELU(), num_experts=2)
    assert torch.count_nonzero(module.fc1_bias) == 0 and torch.count_nonzero(module.fc2_bias) == 0
    with pytest.raises(ValueError, match="do not form an MLP"):
        FusedExperts.from_linear(nn.Linear(D, H), nn.Linear(H + 1, D), QuickGELU(), num_experts=2)


def test_constructor_layout_and_init_scale():
    torch.manual_seed(0)
    module = FusedExperts(E, D, H, QuickGELU(), dtype=torch.float64)
    assert module.fc1_weight.dtype == torch.float64
    assert module.fc1_weight.abs().max() <= 1 / D**0.5 and module.fc2_weight.abs().max() <= 1 / H**0.5
    assert not torch.equal(module.fc1_weight[0], module.fc1_weight[1])
    assert "num_experts=3, dim=8, hidden_dim=16" in repr(module)


def test_shape_and_activation_errors():
    module = FusedExperts(E, D, H, QuickGELU())
    x = torch.randn(B, N, D)
    with pytest.raises(ValueError, match=r"gates must have shape \(2, 3\)"):
        module(x, torch.ones(B, E + 1))
    with pytest.raises(ValueError, match=r"x must be \[B, N, d\]"):
        module(torch.randn(N, D), torch.ones(B, E))
    with pytest.raises(ValueError, match="out-of-place"):
        fused_experts(x, torch.ones(B, E), *list(module.parameters()), nn.ReLU(inplace=True))


@pytest.mark.parametrize("name", ["quick_gelu", "gelu_pytorch_tanh", "gelu"])
def test_hugging_face_activations_take_the_closed_form_backward_and_match_autograd(name, reference_experts):
    activations = pytest.importorskip("transformers.activations")
    act = activations.ACT2FN[name]
    assert experts_module._activation_kind(act) is not None  # CLIP and SigLIP MLPs hit the fast path
    inputs = _inputs(seed=3)
    grad_out = torch.randn(B, N, D, generator=torch.Generator().manual_seed(4))
    out, grads = _grads(fused_experts, inputs, act, grad_out)
    ref_out, ref_grads = _grads(reference_experts, inputs, act, grad_out)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for label, grad, ref in zip(NAMES, grads, ref_grads, strict=True):
        torch.testing.assert_close(
            grad, ref, atol=1e-5 * max(ref.abs().max().item(), 1.0), rtol=1e-5, msg=label
        )
