"""Templates, label masking, padding and the errors of bad samples."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import covft
from covft.data.collator import IGNORE_INDEX, expand_to_square
from covft.data.errors import BadSampleError
from tests.conftest import make_samples


@pytest.fixture(scope="module")
def model():
    return covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny")


def decode_targets(model, batch, row):
    labels = batch["labels"][row]
    return model.tokenizer.decode(labels[labels != IGNORE_INDEX])


def test_vicuna_labels_are_the_assistant_turns_only(model):
    batch = model.collate(make_samples())
    assert decode_targets(model, batch, 0) == " red</s>"
    assert decode_targets(model, batch, 2) == " blue</s> yes</s>"
    text = model.tokenizer.decode(batch["input_ids"][1][batch["attention_mask"][1].bool()])
    assert text.startswith("<s>A chat between") and "USER: Say hi ASSISTANT: hi</s>" in text


def test_image_tokens_expand_to_the_tower_geometry(model):
    batch = model.collate(make_samples())
    counts = (batch["input_ids"] == model.image_token_id).sum(-1).tolist()
    assert counts == [16, 0, 16]  # (32/8)^2 patches, CLS dropped
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_plain_template_trains_on_the_caption(model):
    sample = {
        "id": "c",
        "image": Image.new("RGB", (32, 32)),
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": "a cat"},
        ],
    }
    batch = model.collate([sample], template="plain")
    assert decode_targets(model, batch, 0) == "a cat\n"
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == model.tokenizer.bos_token_id and ids[1:17] == [model.image_token_id] * 16


def test_plain_template_refuses_a_sample_with_two_images_by_name(model):
    """LLaVA's stage 1 puts one image token in place of the turn: a second image is a bad sample
    (named, so the skip policy can drop it), not a token/feature mismatch inside the forward."""
    sample = {
        "id": "pair",
        "image": [Image.new("RGB", (32, 32)), Image.new("RGB", (32, 32))],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>"},
            {"from": "gpt", "value": "two cats"},
        ],
    }
    with pytest.raises(BadSampleError, match="plain .* takes one image, this sample has 2") as info:
        model.collate([sample], template="plain")
    assert info.value.sample_id == "pair" and info.value.fix


def test_generation_prompt_is_left_padded_and_ends_with_assistant(model):
    batch = model.collate(make_samples()[:2], for_generation=True)
    assert "labels" not in batch
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]
    text = model.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert text.endswith("ASSISTANT:") and "red" not in text


def test_pad_to_square_uses_the_mean_colour():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand_to_square(image, (10, 20, 30))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (10, 20, 30) and square.getpixel((20, 20)) == (255, 0, 0)
    from types import SimpleNamespace

    from covft.data.collator import mean_colour

    clip = SimpleNamespace(image_mean=[0.48145466, 0.4578275, 0.40821073])
    assert mean_colour(clip) == (122, 116, 104)  # LLaVA's tuple(int(x * 255) for x in image_mean)
    assert mean_colour(SimpleNamespace(image_mean=[0.5, 0.5, 0.5])) == (127, 127, 127)


def test_plain_template_refuses_more_than_one_caption_turn(model):
    """LLaVA's preprocess_plain asserts one question and one answer: later turns are not dropped silently."""
    turns = [("human", "<image>\nDescribe."), ("gpt", "A cat."), ("human", "Colour?"), ("gpt", "Black.")]
    sample = {
        "id": "long",
        "image": Image.new("RGB", (32, 32)),
        "conversations": [{"from": role, "value": value} for role, value in turns],
    }
    with pytest.raises(BadSampleError, match="plain .* takes one caption turn, this sample has 4 turns"):
        model.collate([sample], template="plain")


def test_context_inputs_follow_the_images(model):
    m = covft.apply_vft(covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "covft")
    batch = m.collate(make_samples())
    decoded = m.text_encoder.tokenizer.batch_decode(batch["context_input_ids"], skip_special_tokens=True)
    assert decoded == ["what colour is the square?", "what is it? are you sure?"]
    assert batch["context_attention_mask"].shape[0] == batch["pixel_values"].shape[0]


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"id": "x1", "image": None, "conversations": [{"from": "human", "value": "hi"}]}, "no assistant"),
        (
            {
                "id": "x2",
                "image": Image.new("RGB", (8, 8)),
                "conversations": [
                    {"from": "human", "value": "no placeholder"},
                    {"from": "gpt", "value": "a"},
                ],
            },
            "0 <image> placeholder",
        ),
        (
            {
                "id": "x3",
                "image": None,
                "conversations": [
                    {"from": "human", "value": "<image> twice <image>"},
                    {"from": "gpt", "value": "a"},
                ],
            },
            "2 <image> placeholder",
        ),
        (
            {
                "id": "x4",
                "image": None,
                "conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "a"}],
            },
            "unknown role 'robot'",
        ),
    ],
)
def test_bad_samples_name_the_sample_and_the_problem(model, sample, message):
    with pytest.raises(BadSampleError, match=message) as info:
        model.collate([sample])
    assert sample["id"] in str(info.value)


def test_truncation_that_would_cut_image_tokens_is_an_error(model):
    sample = {
        "id": "long",
        "image": Image.new("RGB", (8, 8)),
        "conversations": [{"from": "human", "value": "x" * 300 + "<image>"}, {"from": "gpt", "value": "a"}],
    }
    with pytest.raises(BadSampleError, match="cut image tokens") as info:
        model.collate([sample], max_length=200)
    assert "'long'" in str(info.value)
    ok = model.collate([make_samples()[1]], max_length=180)
    assert ok["input_ids"].shape[1] <= 180


def test_labels_align_with_a_single_tokenisation(model):
    """Segment-wise tokenisation with the byte tokenizer equals tokenising the whole string."""
    batch = model.collate([make_samples()[1]])
    ids = batch["input_ids"][0].tolist()
    text = model.tokenizer.decode(ids[1:])
    assert model.tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert torch.equal(batch["attention_mask"][0], torch.ones(len(ids), dtype=torch.long))


def test_a_sample_context_field_overrides_the_human_turns():
    m = covft.apply_vft(covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "covft")
    sample = dict(make_samples()[0], context="Which colour? A. red B. blue")
    batch = m.collate([sample], for_generation=True)
    decoded = m.text_encoder.tokenizer.batch_decode(batch["context_input_ids"], skip_special_tokens=True)
    assert decoded == ["which colour? a. red b. blue"]


def test_context_mask_is_omitted_when_nothing_is_padded():
    m = covft.apply_vft(covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "qavit")
    batch = m.collate([make_samples()[0]])
    assert "context_input_ids" in batch and "context_attention_mask" not in batch
    padded = m.collate([make_samples()[0], make_samples()[2]])
    assert padded["context_attention_mask"].sum(-1).tolist() == [8, 10]
    with torch.no_grad():  # QA-ViT reads "no mask" as "every instruction token is real"
        alone = m(**batch).logits[0]
        both = m(**padded).logits[0, : alone.shape[0]]
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-5)


def test_truncation_never_cuts_a_qwen_image_span_at_its_end_marker():
    """A cut right before the last <|vision_end|> leaves no image token after it, but still half a
    span: every token an image writes counts, not only the image token."""
    m = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", family="qwen2_5_vl")
    turns = [("human", "<image>\nA?"), ("gpt", "yes"), ("human", "<image>\nB?"), ("gpt", "no")]
    sample = {
        "id": "q",
        "image": [Image.new("RGB", (28, 28)), Image.new("RGB", (28, 28), (9, 9, 9))],
        "conversations": [{"from": role, "value": value} for role, value in turns],
    }
    full = m.collate([sample])["input_ids"][0].tolist()
    end = m.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    last_end = max(i for i, t in enumerate(full) if t == end)
    with pytest.raises(BadSampleError, match="truncation would cut image tokens"):
        m.collate([sample], max_length=last_end)
    assert m.collate([sample], max_length=last_end + 1)["input_ids"].shape[1] == last_end + 1
