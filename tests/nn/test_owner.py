"""Per-sample routing with ``ContextState.owner``: several tower rows (images, anyres tiles) per
sample, or packed tokens ``[T, d]`` (Qwen-VL). The reference is always today's owner-less module
run on each sample's tokens concatenated into one ``[1, n_s, d]`` row."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from covft.nn import CONTEXTS, ROUTINGS, ContextState, ContextualMoE, ContextVectorExtractor
from covft.nn.segments import check_owner, segment_mean

D, T_DIM, N = 16, 12, 3
F64 = {"atol": 1e-12, "rtol": 1e-10}
ROUTED = {"atol": 1e-6, "rtol": 1e-5}
"""Where the float32 gates matter (routing runs in float32 whatever the tower's dtype): the sum of
the gates at initialisation, and gradients that reach the routing path through them."""

OWNERS = {
    # sample index of each tower row; three samples with 1, 2 and 4 rows
    "contiguous": [0, 1, 1, 2, 2, 2, 2],
    "shuffled_contiguous": [2, 2, 2, 2, 0, 1, 1],
    "interleaved": [1, 2, 0, 2, 1, 2, 2],
}


@pytest.fixture(params=["fc1_fc2", "swiglu"])
def any_mlp(request):
    return request.getfixturevalue("tiny_mlp" if request.param == "fc1_fc2" else "tiny_swiglu_mlp")


def _tokens(layout: str, owner_rows: list[int], dtype=torch.float64):
    """``(x, owner)``: ``[R, N, D]`` rows with ``owner [R]``, or packed ``[T, D]`` with ``owner [T]``
    (each row's N tokens, so samples own uneven numbers of tokens)."""
    owner = torch.tensor(owner_rows)
    x = torch.randn(len(owner_rows), N, D, dtype=dtype)
    if layout == "packed":
        return x.reshape(-1, D), owner.repeat_interleave(N)
    return x, owner


def _sample_row(x: torch.Tensor, owner: torch.Tensor, sample: int) -> torch.Tensor:
    """All tokens of ``sample`` as one ``[1, n_s, D]`` row, in order."""
    return x[owner == sample].reshape(1, -1, D)


# ----------------------------------------------------------------------------------------- CVE
def _old_attend(cve: ContextVectorExtractor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The owner-less CVE as it was before owners existed (copied), to hold it bit for bit."""
    visual, text, attn = cve.visual_block(z), cve.text_block(t), cve.attn
    batch, heads, dim = visual.shape[0], attn.num_heads, cve.visual_dim
    head_dim = cve.text_dim // heads
    query_bias, _, value_bias = attn.in_proj_bias.chunk(3)
    query = F.linear(text, attn.q_proj_weight, query_bias).view(batch, heads, head_dim)
    key_visual = attn.k_proj_weight[:, :dim].reshape(heads, head_dim, dim)
    value_visual = attn.v_proj_weight[:, :dim].reshape(heads, head_dim, dim)
    probe = torch.einsum("bhe,hed->bhd", query, key_visual) * head_dim**-0.5
    weights = torch.einsum("bhd,bnd->bhn", probe, visual).softmax(dim=-1)
    pooled = torch.einsum("bhn,bnd->bhd", weights, visual)
    values = torch.einsum("bhd,hed->bhe", pooled, value_visual).reshape(batch, cve.text_dim)
    values = values + F.linear(text, attn.v_proj_weight[:, dim:], value_bias)
    return attn.out_proj(values)


def _cve(dtype=torch.float64) -> ContextVectorExtractor:
    torch.manual_seed(0)
    cve = ContextVectorExtractor(D, T_DIM, num_heads=4).to(dtype)
    with torch.no_grad():
        cve.attn.in_proj_bias.normal_()
    return cve


def test_cve_without_owner_is_bitwise_unchanged():
    cve = _cve(torch.float32)
    z, t = torch.randn(3, 7, D), torch.randn(3, T_DIM)
    assert torch.equal(cve(z, t), _old_attend(cve, z, t))
    assert torch.equal(cve(z, t, None), _old_attend(cve, z, t))


@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("owners", list(OWNERS))
def test_cve_with_owner_pools_each_samples_tokens_as_one_row(owners, layout):
    cve = _cve()
    x, owner = _tokens(layout, OWNERS[owners])
    t = torch.randn(3, T_DIM, dtype=torch.float64)
    got = cve(x, t, owner)
    expected = torch.cat([cve(_sample_row(x, owner, s), t[s : s + 1]) for s in range(3)])
    assert got.shape == (3, T_DIM)
    torch.testing.assert_close(got, expected, **F64)


@pytest.mark.parametrize("layout", ["rows", "packed"])
def test_cve_with_owner_has_the_gradients_of_the_per_sample_loop(layout):
    cve = _cve()
    x, owner = _tokens(layout, OWNERS["interleaved"])
    x.requires_grad_(True)
    t = torch.randn(3, T_DIM, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, T_DIM, dtype=torch.float64)
    (cve(x, t, owner) * weight).sum().backward()
    ours = {n: p.grad.clone() for n, p in cve.named_parameters()}
    ours_x, ours_t = x.grad.clone(), t.grad.clone()
    cve.zero_grad()
    x.grad = t.grad = None
    sum((cve(_sample_row(x, owner, s), t[s : s + 1]) * weight[s]).sum() for s in range(3)).backward()
    for name, parameter in cve.named_parameters():
        torch.testing.assert_close(ours[name], parameter.grad, **F64, msg=name)
    torch.testing.assert_close(ours_x, x.grad, **F64)
    torch.testing.assert_close(ours_t, t.grad, **F64)


def test_cve_owner_in_half_precision_accumulates_in_float32():
    cve = _cve(torch.float32)
    x, owner = _tokens("packed", OWNERS["interleaved"], torch.float32)
    t = torch.randn(3, T_DIM)
    expected = cve(x, t, owner)
    got = cve.to(torch.bfloat16)(x.bfloat16(), t.bfloat16(), owner)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.05)


def test_cve_owner_errors_say_what_is_wrong():
    cve = _cve()
    x = torch.randn(4, N, D, dtype=torch.float64)
    t = torch.randn(2, T_DIM, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"values must index the 2 samples \(0\.\.1\), got values in \[0, 2\]"
    ):
        cve(x, t, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"values must index.*\[-1, 1\]"):
        cve(x, t, torch.tensor([0, 1, -1, 1]))
    with pytest.raises(ValueError, match=r"1 of 2 own none \(samples \[1\]\)"):
        cve(x, t, torch.tensor([0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \[4\], got torch.int64 of shape \(3,\)"):
        cve(x, t, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="long tensor"):
        cve(x, t, torch.tensor([0.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"text_vector must be \[S, 12\]"):
        cve(x, torch.randn(2, 5, dtype=torch.float64), torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"\[R, N, 16\] \(rows\) or \[T, 16\] \(packed tokens\)"):
        cve(x.unsqueeze(0), t, torch.tensor([0]))


def test_segment_helpers():
    owner = torch.tensor([1, 0, 1])
    rows = torch.arange(3 * 2 * 2, dtype=torch.float64).view(3, 2, 2)
    torch.testing.assert_close(
        segment_mean(rows, owner, 2), torch.stack([rows[1].mean(0), rows[[0, 2]].mean((0, 1))])
    )
    with pytest.raises(ValueError, match="both must be positive"):
        check_owner(torch.zeros(0, dtype=torch.long), 0, 1)


# ------------------------------------------------------------------------------------ CoMoE
def _moe(mlp, routing="dense", context="cve", samples=3, diverge=True):
    torch.manual_seed(1)
    mlp = mlp.to(torch.float64)
    state = ContextState(text=torch.randn(samples, T_DIM, dtype=torch.float64))
    moe = ContextualMoE.from_mlp(mlp, state, T_DIM, routing=routing, context=context, top_k=2)
    if diverge:  # distinct experts, so the output depends on the gates
        with torch.no_grad():
            for parameter in moe.experts.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return moe, state


def _per_sample(moe, state, x, owner, text):
    """Today's CoMoE, one sample at a time on its concatenated tokens: (output shaped like x, gates, contexts)."""
    out, gates, contexts = torch.zeros_like(x), [], []
    state.owner = None
    for s in range(text.shape[0]):
        state.text = text[s : s + 1]
        rows = owner == s
        out[rows] = moe(_sample_row(x, owner, s)).reshape(x[rows].shape)
        gates.append(moe.last_gates)
        contexts.append(moe.last_context)
    state.text = text
    context = None if contexts[0] is None else torch.cat(contexts)
    return out, torch.cat(gates), context


@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("context", CONTEXTS)
def test_comoe_with_owner_equals_per_sample_comoe(context, routing, layout, any_mlp):
    moe, state = _moe(any_mlp, routing, context)
    x, owner = _tokens(layout, OWNERS["interleaved"])
    text = state.text
    state.owner = owner
    got = moe(x)
    got_gates, got_context = moe.last_gates, moe.last_context
    assert got.shape == x.shape and got_gates.shape == (3, moe.num_experts)
    expected, gates, contexts = _per_sample(moe, state, x, owner, text)
    torch.testing.assert_close(got, expected, **F64)
    torch.testing.assert_close(got_gates, gates, **F64)
    if contexts is None:
        assert got_context is None
    else:
        torch.testing.assert_close(got_context, contexts, **F64)


@pytest.mark.parametrize("routing", ["dense", "sparse"])
def test_comoe_with_equal_segments_equals_the_owner_less_module_on_concatenated_rows(routing, tiny_mlp):
    """Also the Switch loss: with an owner it is computed over samples, as over rows without one."""
    moe, state = _moe(tiny_mlp, routing, samples=2)
    x = torch.randn(4, N, D, dtype=torch.float64)
    state.owner = torch.tensor([0, 0, 1, 1])
    got, got_gates, got_aux = moe(x), moe.last_gates, moe.aux_loss
    state.owner = None
    expected = moe(x.reshape(2, 2 * N, D)).reshape(x.shape)
    torch.testing.assert_close(got, expected, **F64)
    torch.testing.assert_close(got_gates, moe.last_gates, **F64)
    if routing == "sparse":
        torch.testing.assert_close(got_aux, moe.aux_loss, **F64)
    else:
        assert got_aux is None and moe.aux_loss is None


def test_comoe_without_owner_is_bitwise_the_old_formula(tiny_mlp):
    moe, state = _moe(tiny_mlp.float(), samples=3)
    moe.float()
    state.text = state.text.float()
    z = torch.randn(3, 5, D)
    expected = moe.experts(z, moe.router(_old_attend(moe.cve, z, state.text)).float().softmax(-1))
    assert torch.equal(moe(z), expected)
    for context in ("image", "concat"):
        moe, state = _moe(tiny_mlp.float(), context=context, samples=3)
        moe.float()
        text = state.text.float()
        state.text = text
        mean = z.mean(dim=1)
        router_input = mean if context == "image" else moe.concat_proj(torch.cat([mean, text], -1))
        assert torch.equal(moe(z), moe.experts(z, moe.router(router_input).float().softmax(-1)))


@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("context", CONTEXTS)
def test_comoe_with_owner_is_the_source_mlp_at_initialisation(context, routing, layout, any_mlp):
    moe, state = _moe(any_mlp, routing, context, diverge=False)
    x, owner = _tokens(layout, OWNERS["shuffled_contiguous"])
    state.owner = owner
    torch.testing.assert_close(moe(x), any_mlp(x), **ROUTED)
    torch.testing.assert_close(moe.last_gates.sum(-1), torch.ones(3))


@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("context", ["cve", "text", "concat"])
def test_changing_one_samples_text_changes_only_its_rows(context, layout, any_mlp):
    moe, state = _moe(any_mlp, context=context)
    x, owner = _tokens(layout, OWNERS["interleaved"])
    state.owner = owner
    before = moe(x)
    state.text = state.text.clone()
    state.text[0] += 2.0
    after = moe(x)
    mine = owner == 0
    assert (after[mine] - before[mine]).abs().max() > 1e-6
    assert torch.equal(after[~mine], before[~mine])


@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("routing", ["dense", "sparse"])
def test_comoe_with_owner_has_the_gradients_of_the_per_sample_loop(routing, layout, any_mlp):
    moe, state = _moe(any_mlp, routing)
    x, owner = _tokens(layout, OWNERS["interleaved"])
    x.requires_grad_(True)
    text = state.text
    weight = torch.randn_like(x)
    state.owner = owner
    (moe(x) * weight).sum().backward()
    ours = {n: p.grad.clone() for n, p in moe.named_parameters()}
    ours_x = x.grad.clone()
    moe.zero_grad()
    x.grad = None
    out, _, _ = _per_sample(moe, state, x, owner, text)
    (out * weight).sum().backward()
    assert set(ours) == {n for n, p in moe.named_parameters() if p.grad is not None}
    for (
        name,
        parameter,
    ) in moe.named_parameters():  # the experts' exactly, the routing's through float32 gates
        tolerance = F64 if name.startswith("experts.") else ROUTED
        torch.testing.assert_close(ours[name], parameter.grad, **tolerance, msg=name)
    torch.testing.assert_close(ours_x, x.grad, **ROUTED)
    assert ours["router.weight"].abs().max() > 0 and ours["cve.attn.q_proj_weight"].abs().max() > 0


def test_image_context_and_uniform_routing_need_no_text(tiny_mlp):
    for routing, context in (("dense", "image"), ("uniform", "cve")):
        moe, state = _moe(tiny_mlp, routing, context)
        state.text = None
        x, owner = _tokens("packed", OWNERS["contiguous"])
        state.owner = owner
        moe(x)
        assert moe.last_gates.shape == (3, 4)
        if context == "image":
            torch.testing.assert_close(moe.last_context, segment_mean(x.unsqueeze(1), owner, 3))


def test_comoe_owner_errors_say_what_is_wrong(tiny_mlp):
    moe, state = _moe(tiny_mlp, context="text")
    x = torch.randn(4, N, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"packed hidden_states \[T, 16\].*need ContextState.owner"):
        moe(x.reshape(-1, D))
    state.owner = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"owner has shape \(3,\) but the MLP got 4 rows"):
        moe(x)
    state.owner = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"must index the 3 samples"):
        moe(x)
    state.owner = torch.tensor([0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"1 of 3 own none \(samples \[2\]\)"):
        moe(x)
    state.text = torch.randn(3, T_DIM + 1, dtype=torch.float64)
    state.owner = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"with ContextState.owner, pass one \[CLS\] vector per sample"):
        moe(x)
    cve_moe, cve_state = _moe(tiny_mlp)  # the CVE checks the owner itself
    cve_state.owner = torch.tensor([0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"own none"):
        cve_moe(x)
    with pytest.raises(ValueError, match=r"hidden_states must be \[B, N, 16\] \(or packed"):
        cve_moe(x.unsqueeze(0))


# ----------------------------------------------------------------------------- ContextState
def test_context_state_rows_gathers_per_sample_tensors():
    text = torch.randn(2, T_DIM)
    state = ContextState(text=text)
    assert state.rows(text, 2) is text
    with pytest.raises(ValueError, match=r"ContextState.text has 2 rows but the vision tower got 3 images"):
        state.rows(text, 3, name="text")
    state.owner = torch.tensor([1, 0, 1])
    assert torch.equal(state.rows(text, 3), text[[1, 0, 1]])
    with pytest.raises(ValueError, match=r"owner has shape \(3,\) but the vision tower got 4 rows"):
        state.rows(text, 4)
    with pytest.raises(ValueError, match="must index the 1 samples"):
        state.rows(text[:1], 3)
    state.clear()
    assert state.owner is None and state.text is None
