"""CoVFT on a LLaVA model: exactness at initialisation, routing semantics, layer choice, counts."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.nn.comoe import ContextualMoE
from tests.conftest import make_samples


def tiny(tower="clip", layers=4, **kw):
    return covft.build_model(
        "tiny-test",
        vision_layers=layers,
        vision_tower=tower,
        seed=0,
        text_encoder=kw.pop("text_encoder", "random-tiny"),
        **kw,
    )


VARIANTS = [(r, c) for r in ("dense", "sparse", "uniform") for c in ("cve", "text", "image", "concat")]


@pytest.mark.parametrize("tower", ["clip", "siglip"])
@pytest.mark.parametrize(("routing", "context"), VARIANTS)
def test_covft_at_init_reproduces_the_unmodified_model(routing, context, tower):
    reference = tiny(tower)
    model = covft.apply_vft(tiny(tower), "covft", routing=routing, context=context)
    reference.eval(), model.eval()
    batch = model.collate(make_samples())
    with torch.no_grad():
        expected = reference(**{k: v for k, v in batch.items() if not k.startswith("context_")}).logits
        got = model(**batch).logits
    assert (got - expected).abs().max().item() <= 1e-5


def test_default_layers_are_the_second_half_of_the_feeding_blocks():
    assert covft.apply_vft(tiny(layers=4), "covft").routed_blocks == [1, 2]
    assert covft.apply_vft(tiny(layers=6), "covft").routed_blocks == [2, 3, 4]
    assert covft.apply_vft(tiny(layers=6), "covft", layers=[0, 4]).routed_blocks == [0, 4]
    assert covft.apply_vft(tiny(layers=6), "covft", start_layer=3).routed_blocks == [3, 4]
    assert covft.apply_vft(tiny(layers=6), "covft", last_n=1).routed_blocks == [4]
    with pytest.raises(ValueError, match="feed the LLM"):
        covft.apply_vft(tiny(layers=6), "covft", layers=[5])


def test_only_mlp_is_replaced_and_layer_class_kept():
    reference = tiny()
    model = covft.apply_vft(tiny(), "covft")
    for i, (a, b) in enumerate(zip(reference.encoder_layers, model.encoder_layers, strict=True)):
        assert type(a) is type(b)
        assert type(b.forward) is type(a.forward) and "forward" not in vars(b)
        assert isinstance(b.mlp, ContextualMoE) == (i in model.routed_blocks)
        assert type(b.self_attn) is type(a.self_attn)


def _perturbed_covft():
    model = covft.apply_vft(tiny(), "covft")
    torch.manual_seed(1)
    with torch.no_grad():  # break the experts' symmetry so routing matters
        for i in model.routed_blocks:
            model.encoder_layers[i].mlp.experts.fc1_weight.add_(
                0.1 * torch.randn_like(model.encoder_layers[i].mlp.experts.fc1_weight)
            )
    model.eval()
    return model


def _sample(question: str, answer: str, image):
    return {
        "id": "s",
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def test_routing_changes_with_the_instruction_not_with_the_answer():
    model = _perturbed_covft()
    image = make_samples()[0]["image"]
    with torch.no_grad():
        model(**model.collate([_sample("Where is the red square?", "left", image)]))
        a = {k: v.clone() for k, v in model.routing_weights().items()}
        model(**model.collate([_sample("Where is the red square?", "a completely different answer", image)]))
        b = {k: v.clone() for k, v in model.routing_weights().items()}
        model(**model.collate([_sample("Read the text in the picture.", "left", image)]))
        c = {k: v.clone() for k, v in model.routing_weights().items()}
    assert set(a) == set(model.routed_blocks)
    for k in a:
        assert a[k].shape == (1, 4)
        torch.testing.assert_close(a[k].sum(-1), torch.ones(1))
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        assert (a[k] - c[k]).abs().max() > 1e-6


def test_context_text_is_human_turns_without_image_placeholder():
    from covft.data.templates import context_text

    conv = make_samples()[2]["conversations"]
    assert context_text(conv) == "What is it? Are you sure?"


def test_mixed_batch_routes_only_image_samples():
    model = _perturbed_covft()
    batch = model.collate(make_samples())
    assert batch["pixel_values"].shape[0] == 2 and batch["context_input_ids"].shape[0] == 2
    with torch.no_grad():
        model(**batch)
    assert all(g.shape == (2, 4) for g in model.routing_weights().values())


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = _perturbed_covft()
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(**model.collate(make_samples())).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_generate_uses_context_at_prefill_only():
    model = _perturbed_covft()
    prompt = [
        {
            "id": "g",
            "image": make_samples()[0]["image"],
            "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}],
        }
    ]
    batch = model.collate(prompt, for_generation=True)
    assert "labels" not in batch
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4)
    hook.remove()
    assert out.shape[1] == batch["input_ids"].shape[1] + 4
    assert len(calls) == 1
    # greedy generation equals the argmax of a full forward at the first new token
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
    assert out[0, batch["input_ids"].shape[1]].item() == logits.argmax(-1).item()


def test_sparse_routing_adds_the_load_balancing_loss():
    model = covft.apply_vft(tiny(), "covft", routing="sparse")
    batch = model.collate(make_samples())
    out = model(**batch)
    aux = model.auxiliary_loss()
    assert aux is not None and aux.item() > 0
    plain = model.llava(**{k: v for k, v in batch.items() if not k.startswith("context_")})
    torch.testing.assert_close(out.loss, plain.loss + model.auxiliary_loss(), rtol=1e-5, atol=1e-6)
    for gates in model.routing_weights().values():
        assert ((gates > 0).sum(-1) == 2).all()


def test_default_text_encoder_is_the_packaged_minilm():
    model = covft.apply_vft(tiny(text_encoder="minilm"), "covft")
    assert model.text_encoder.hidden_size == 384
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    out = model(**model.collate(make_samples()))
    assert torch.isfinite(out.loss)


def test_llava_15_7b_geometry_has_the_papers_trainable_vision_count():
    model = covft.build_model("llava-1.5-7b", device="meta")
    assert model.feeding_layers == 23 and model.num_image_tokens == 576
    covft.apply_vft(model, "covft")
    assert model.routed_blocks == list(range(11, 23))
    assert model.num_parameters("vision", trainable=True) == 529_007_664
    assert model.text_encoder.hidden_size == 768


def test_generate_handles_text_only_batches():
    model = _perturbed_covft()
    batch = model.collate([make_samples()[1]], for_generation=True)
    assert "pixel_values" not in batch
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_generate_clears_the_context_it_set():
    model = _perturbed_covft()
    batch = model.collate(make_samples()[:1], for_generation=True)
    model.generate(**batch, max_new_tokens=2)
    context = model.context
    assert context.text is None and context.text_tokens is None and context.text_mask is None
    assert context.owner is None
    context.owner = torch.tensor([5])  # stale: LLaVA-1.5 batches are one image per sample
    model(**model.collate(make_samples()))  # a forward keeps it: checkpointed blocks re-read it in backward
    assert context.text is not None and context.owner is None


def test_the_wrapper_finds_routed_modules_of_any_strategy():
    from covft.nn import RoutedModule

    model = covft.apply_vft(tiny(layers=6), "qmoe", num_experts=3)
    assert list(model.routed_modules()) == ["projector"] and model.routed_blocks == []
    assert isinstance(model.llava.model.multi_modal_projector, RoutedModule)
    model(**model.collate(make_samples()))
    weights = model.routing_weights()
    assert list(weights) == ["projector"] and weights["projector"].shape == (2, 3)
    assert model.auxiliary_loss() is None
    stats = model.routing_stats()
    assert set(stats) == {"routing/projector/entropy", "routing/projector/max_entropy"} | {
        f"routing/projector/expert{e}" for e in range(3)
    }
    torch.testing.assert_close(sum(stats[f"routing/projector/expert{e}"] for e in range(3)), 1.0)
    routed = covft.apply_vft(tiny(layers=6), "covft", layers=[0, 4])
    assert list(routed.routed_modules()) == [0, 4]
    assert all(routed.routed_modules()[i] is routed.encoder_layers[i].mlp for i in (0, 4))
