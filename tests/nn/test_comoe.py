import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from covft.nn import (
    CONTEXTS,
    ROUTINGS,
    ContextState,
    ContextualMoE,
    ContextVectorExtractor,
    FusedExperts,
    FusedSwiGLUExperts,
)

D, H, T_DIM, B, N = 16, 48, 12, 3, 5


@pytest.fixture(params=["fc1_fc2", "swiglu"])
def any_mlp(request):
    """Both MLP layouts CoMoE upcycles: CLIP/SigLIP's fc1/act/fc2 and Qwen2.5-VL's gated SwiGLU."""
    return request.getfixturevalue("tiny_mlp" if request.param == "fc1_fc2" else "tiny_swiglu_mlp")


def _build(mlp, routing="dense", context="cve", text=True, **kwargs):
    torch.manual_seed(1)
    state = ContextState(text=torch.randn(B, T_DIM) if text else None)
    moe = ContextualMoE.from_mlp(mlp, state, T_DIM, routing=routing, context=context, **kwargs)
    return moe, state


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("context", CONTEXTS)
def test_identical_to_the_source_mlp_at_initialisation(routing, context, any_mlp):
    moe, _ = _build(any_mlp, routing, context)
    z = torch.randn(B, N, D)
    out = moe(z)
    assert out.shape == (B, N, D)
    torch.testing.assert_close(out, any_mlp(z), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moe.last_gates.sum(-1), torch.ones(B))


@pytest.mark.parametrize("context", ["cve", "text", "concat"])
def test_gates_depend_on_the_text(context, tiny_mlp):
    moe, state = _build(tiny_mlp, context=context)
    z = torch.randn(B, N, D)
    moe(z)
    first = moe.last_gates.clone()
    state.text = torch.randn(B, T_DIM) * 3
    moe(z)
    assert (moe.last_gates - first).abs().max() > 1e-4


def test_image_context_ignores_the_text_and_needs_no_text_dim(tiny_mlp):
    state = ContextState()
    moe = ContextualMoE.from_mlp(tiny_mlp, state, None, context="image")
    assert moe.router.in_features == D and moe.cve is None
    z = torch.randn(B, N, D)
    moe(z)
    first = moe.last_gates.clone()
    torch.testing.assert_close(moe.last_context, z.mean(1))
    state.text = torch.randn(B, 99)
    moe(z)
    torch.testing.assert_close(moe.last_gates, first)


def test_dense_gates_are_the_softmax_of_the_router_on_the_cve_context(tiny_mlp):
    moe, state = _build(tiny_mlp)
    assert isinstance(moe.cve, ContextVectorExtractor) and moe.router.in_features == T_DIM
    z = torch.randn(B, N, D)
    moe(z)
    context = moe.cve(z, state.text)
    torch.testing.assert_close(moe.last_context, context)
    torch.testing.assert_close(moe.last_gates, moe.router(context).softmax(-1))
    assert not moe.last_gates.requires_grad and not moe.last_context.requires_grad
    assert moe.aux_loss is None


def test_concat_and_text_contexts(tiny_mlp):
    moe, state = _build(tiny_mlp, context="concat")
    assert moe.concat_proj.in_features == D + T_DIM and moe.concat_proj.out_features == T_DIM
    z = torch.randn(B, N, D)
    moe(z)
    torch.testing.assert_close(moe.last_context, moe.concat_proj(torch.cat([z.mean(1), state.text], -1)))
    moe, state = _build(tiny_mlp, context="text")
    assert moe.cve is None and moe.concat_proj is None
    moe(z)
    torch.testing.assert_close(moe.last_context, state.text)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_sparse_keeps_exactly_k_renormalised_experts(top_k, tiny_mlp):
    moe, state = _build(tiny_mlp, routing="sparse", num_experts=4, top_k=top_k)
    z = torch.randn(B, N, D)
    moe(z)
    gates = moe.last_gates
    assert ((gates > 0).sum(-1) == top_k).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(B))
    probs = moe.router(moe.cve(z, state.text)).softmax(-1)
    top = probs.topk(top_k, -1)
    torch.testing.assert_close(gates.gather(-1, top.indices), top.values / top.values.sum(-1, keepdim=True))


def test_sparse_load_balancing_loss_follows_the_switch_formula_and_has_grad(tiny_mlp):
    moe, state = _build(tiny_mlp, routing="sparse", num_experts=4, top_k=2)
    assert moe.load_balance_weight == 0.01
    z = torch.randn(B, N, D)
    moe(z)
    probs = moe.router(moe.cve(z, state.text)).softmax(-1)
    chosen = probs.topk(2, -1).indices
    fraction = torch.stack([(chosen == e).sum() for e in range(4)]).float() / (B * 2)
    expected = 0.01 * 4 * (fraction * probs.mean(0)).sum()
    assert moe.aux_loss.item() > 0
    torch.testing.assert_close(moe.aux_loss, expected)
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert moe.experts.fc1_weight.grad is None  # the loss only trains the routing path


def test_load_balancing_can_be_disabled_and_is_rejected_for_dense(tiny_mlp):
    moe, _ = _build(tiny_mlp, routing="sparse", load_balance_weight=0)
    moe(torch.randn(B, N, D))
    assert moe.aux_loss is None
    with pytest.raises(ValueError, match="only applies to routing='sparse'"):
        _build(tiny_mlp, routing="dense", load_balance_weight=0.1)


def test_uniform_has_no_router_and_every_parameter_gets_a_gradient(tiny_mlp):
    moe, state = _build(tiny_mlp, routing="uniform", text=False)
    assert moe.router is None and moe.cve is None and moe.concat_proj is None
    assert all(name.startswith("experts.") for name, _ in moe.named_parameters())
    moe(torch.randn(B, N, D)).pow(2).sum().backward()
    torch.testing.assert_close(moe.last_gates, torch.full((B, 4), 0.25))
    assert moe.last_context is None
    assert all(p.grad is not None for p in moe.parameters())


def test_identical_experts_give_the_routing_path_only_rounding_noise_at_initialisation(tiny_mlp):
    """Why dense routers collapse under Adam (docs/decisions.md): with the upcycled experts equal,
    d loss / d gate is the same for every expert and the softmax's gradient vanishes, so the router
    and the CVE see float32 rounding noise, about 1e-7 of the experts' gradient, while Adam divides
    any gradient well above its epsilon by its own size."""
    moe, _ = _build(tiny_mlp)
    z = torch.randn(B, N, D)
    out = moe(z)
    (out * torch.randn_like(out)).sum().backward()
    experts = moe.experts.fc1_weight.grad.abs().max()
    routing = max(p.grad.abs().max() for p in [*moe.router.parameters(), *moe.cve.parameters()])
    assert experts > 0.1 and routing < 1e-5 * experts


def test_dense_cve_trains_every_parameter_after_experts_diverge(any_mlp):
    moe, _ = _build(any_mlp)
    with torch.no_grad():
        for parameter in moe.experts.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    moe(torch.randn(B, N, D)).pow(2).sum().backward()
    missing = [name for name, p in moe.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_parameter_count_of_a_vit_l_block_matches_method_section_2_4():
    mlp = nn.Module()
    mlp.fc1, mlp.fc2, mlp.activation_fn = nn.Linear(1024, 4096), nn.Linear(4096, 1024), nn.GELU()
    moe = ContextualMoE.from_mlp(mlp, ContextState(), 768, num_experts=4)
    assert sum(p.numel() for p in moe.experts.parameters()) == 4 * 8_393_728
    assert sum(p.numel() for p in moe.router.parameters()) == 3_076
    assert sum(p.numel() for p in moe.parameters()) == 44_075_780


def test_from_mlp_copies_the_activation_and_matches_device_and_dtype(tiny_mlp):
    tiny_mlp.activation_fn = nn.GELU(approximate="tanh")
    tiny_mlp.to(torch.float64)
    moe, state = _build(tiny_mlp, context="concat")
    assert isinstance(moe.experts.act, nn.GELU) and moe.experts.act.approximate == "tanh"
    assert moe.experts.act is not tiny_mlp.activation_fn
    assert {p.dtype for p in moe.parameters()} == {torch.float64}
    z = torch.randn(B, N, D, dtype=torch.float64)
    torch.testing.assert_close(moe(z), tiny_mlp(z))  # state.text is float32: cast to the tower's dtype
    with pytest.raises(ValueError, match=r"Linear lacks .*\.fc1/\.fc2.*\.gate_proj, \.up_proj, \.down_proj"):
        ContextualMoE.from_mlp(nn.Linear(2, 2), state, T_DIM)


@pytest.mark.parametrize("bias", [True, False])
def test_from_mlp_upcycles_a_gated_swiglu_mlp_into_swiglu_experts(bias, tiny_swiglu_mlp):
    mlp = tiny_swiglu_mlp if bias else type(tiny_swiglu_mlp)(D, 40, bias=False)
    mlp.to(torch.float64)
    moe, _ = _build(mlp, num_experts=3)
    experts = moe.experts
    assert isinstance(experts, FusedSwiGLUExperts) and experts.num_experts == 3
    assert isinstance(experts.act, nn.SiLU) and experts.act is not mlp.act_fn
    assert (experts.gate_bias is not None) is bias
    assert {p.dtype for p in moe.parameters()} == {torch.float64}
    expert_params = 3 * (3 * 40 * D + (2 * 40 + D if bias else 0))
    assert sum(p.numel() for p in experts.parameters()) == expert_params
    z = torch.randn(B, N, D, dtype=torch.float64)
    torch.testing.assert_close(moe(z), mlp(z))


def test_missing_or_mismatched_text_explains_what_to_pass(tiny_mlp):
    moe, state = _build(tiny_mlp, text=False)
    z = torch.randn(B, N, D)
    with pytest.raises(ValueError, match=r"ContextState.text is None.*\[num_images, 12\]"):
        moe(z)
    state.text = torch.randn(B + 1, T_DIM)
    with pytest.raises(ValueError, match=r"got 3 images.*shape \[3, 12\]"):
        moe(z)
    state.text = torch.randn(B, T_DIM + 1)
    with pytest.raises(ValueError, match=r"shape \[3, 12\]"):
        moe(z)


def test_constructor_rejects_bad_options(tiny_mlp):
    experts = FusedExperts(4, D, H, nn.GELU())
    with pytest.raises(ValueError, match="routing must be one of"):
        ContextualMoE(experts, ContextState(), T_DIM, routing="topk")
    with pytest.raises(ValueError, match="context must be one of"):
        ContextualMoE(experts, ContextState(), T_DIM, context="none")
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 4\]"):
        ContextualMoE(experts, ContextState(), T_DIM, routing="sparse", top_k=5)
    with pytest.raises(ValueError, match="pass text_dim"):
        ContextualMoE(experts, ContextState(), None, context="cve")


def test_checkpointed_block_and_bfloat16(any_mlp):
    moe, _ = _build(any_mlp, routing="sparse")
    z = torch.randn(B, N, D, requires_grad=True)
    out = checkpoint(moe, z, use_reentrant=False)
    (out.sum() + moe.aux_loss).backward()
    assert z.grad is not None and moe.router.weight.grad is not None
    moe_bf16, _ = _build(any_mlp.to(torch.bfloat16))
    out = moe_bf16(z.detach().bfloat16())
    assert out.dtype == torch.bfloat16
    assert moe_bf16.last_gates.dtype == torch.float32  # routed in float32, cast inside the experts
    uniform, _ = _build(any_mlp, routing="uniform")
    uniform(z.detach().bfloat16())
    assert uniform.last_gates.dtype == torch.float32


def test_covft_nn_does_not_import_transformers():
    code = "import sys, covft.nn; sys.exit('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_from_mlp_on_hugging_face_clip_and_siglip_mlps():
    transformers = pytest.importorskip("transformers")
    from transformers.models.clip.modeling_clip import CLIPMLP
    from transformers.models.siglip.modeling_siglip import SiglipMLP

    for mlp_class, config in (
        (CLIPMLP, transformers.CLIPVisionConfig(hidden_size=D, intermediate_size=H, num_attention_heads=4)),
        (
            SiglipMLP,
            transformers.SiglipVisionConfig(hidden_size=D, intermediate_size=H, num_attention_heads=4),
        ),
    ):
        torch.manual_seed(0)
        mlp = mlp_class(config)
        moe = ContextualMoE.from_mlp(mlp, ContextState(text=torch.randn(B, T_DIM)), T_DIM)
        assert type(moe.experts.act) is type(mlp.activation_fn)
        z = torch.randn(B, N, D)
        torch.testing.assert_close(moe(z), mlp(z), atol=1e-5, rtol=1e-5)


def test_from_mlp_on_the_hugging_face_qwen2_5_vl_vision_mlp():
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionBlock

    config = transformers.Qwen2_5_VLVisionConfig(
        hidden_size=D, intermediate_size=40, num_heads=4, hidden_act="silu"
    )
    torch.manual_seed(0)
    mlp = Qwen2_5_VLVisionBlock(config).mlp  # the vision blocks build their gated MLP with biases
    assert all(linear.bias is not None for linear in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    moe = ContextualMoE.from_mlp(mlp, ContextState(text=torch.randn(B, T_DIM)), T_DIM)
    assert isinstance(moe.experts, FusedSwiGLUExperts)
    assert type(moe.experts.act) is type(mlp.act_fn)
    z = torch.randn(B, N, D)
    torch.testing.assert_close(moe(z), mlp(z), atol=1e-5, rtol=1e-5)
