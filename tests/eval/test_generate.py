"""Generation: prompts and contexts reach the model as documented, the cache resumes, scores are real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import covft
from covft.eval.benchmarks import ImageRef, get_adapter
from covft.eval.generate import (
    build_sample,
    collect_items,
    evaluate,
    parse_benchmarks,
    predict,
    read_cache,
    shuffle_images,
)
from covft.models.checkpoint import prediction_identity
from covft.models.model import CovftModel


@pytest.fixture(scope="module")
def model() -> CovftModel:
    m = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=0)
    return covft.apply_vft(m, "covft")


def items(n: int = 3) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "image": ImageRef(image=Image.new("RGB", (8, 8), (40 * i, 0, 0))),
            "prompt": f"What colour is shape {i}?\nAnswer the question using a single word or phrase.",
            "context": f"What colour is shape {i}?",
            "answer": "red",
        }
        for i in range(n)
    ]


class Answering:
    """Stands in for ``CovftModel.generate``: answers ``text`` to every prompt and records the calls."""

    def __init__(self, model: CovftModel, text: str) -> None:
        self.model, self.text, self.calls = model, text, []

    def __call__(self, **batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(batch)
        ids = self.model.tokenizer(self.text, add_special_tokens=False)["input_ids"]
        answer = torch.tensor(ids + [self.model.tokenizer.eos_token_id]).expand(
            batch["input_ids"].shape[0], -1
        )
        return torch.cat([batch["input_ids"], answer], dim=1)


def test_sample_puts_image_placeholder_before_prompt() -> None:
    item = items(1)[0]
    sample = build_sample(item)
    assert sample["conversations"] == [{"from": "human", "value": "<image>\n" + item["prompt"]}]
    assert sample["image"].size == (8, 8)
    pil = Image.new("RGB", (5, 5), (1, 2, 3))  # a PIL image is taken as it is (its .load() is pixel access)
    assert build_sample({"id": "p", "image": pil, "prompt": "Q"})["image"] is pil
    text_only = build_sample({"id": "t", "image": None, "prompt": "Say hi"})
    assert text_only["conversations"][0]["value"] == "Say hi" and text_only["image"] is None


def test_router_sees_context_not_instruction(model: CovftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Answering(model, "red")
    monkeypatch.setattr(model, "generate", fake)
    records = predict(model, items(2), batch_size=2, max_new_tokens=4, progress=False)
    assert [r["prediction"] for r in records] == ["red", "red"]
    batch = fake.calls[0]
    expected = model.text_encoder.tokenizer(
        ["What colour is shape 0?", "What colour is shape 1?"], padding=True, return_tensors="pt"
    )
    assert torch.equal(batch["context_input_ids"], expected["input_ids"])
    assert expected["attention_mask"].all() and "context_attention_mask" not in batch  # nothing padded
    decoded = model.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert "Answer the question using a single word or phrase." in decoded  # the LLM still sees it
    assert batch["input_ids"][:, 0].tolist() != batch["input_ids"][:, -1].tolist()  # left-padded prompt


def test_predictions_match_plain_greedy_generation(model: CovftModel) -> None:
    item = items(1)[0]
    [record] = predict(model, [item], max_new_tokens=3, progress=False)
    batch = model.collate([build_sample(item)], for_generation=True)
    tokens = model.text_encoder.tokenizer([item["context"]], return_tensors="pt")
    batch["context_input_ids"], batch["context_attention_mask"] = (
        tokens["input_ids"],
        tokens["attention_mask"],
    )
    out = model.generate(**batch, max_new_tokens=3)
    expected = model.tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert record["prediction"] == expected
    assert record["answer"] == "red" and record["id"] == "q0"  # the item's fields are kept


def test_cache_resumes_and_survives_a_cut_line(
    model: CovftModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "preds.jsonl"
    cache.write_text('{"id": "q0", "prediction": "blue"}\n{"id": "q1", "pred', encoding="utf-8")
    fake = Answering(model, "green")
    monkeypatch.setattr(model, "generate", fake)
    records = predict(model, items(3), batch_size=1, cache=cache, progress=False)
    assert [r["prediction"] for r in records] == ["blue", "green", "green"]
    assert len(fake.calls) == 2  # q1 and q2 only
    assert read_cache(cache) == {"q0": "blue", "q1": "green", "q2": "green"}
    assert all(json.loads(line) for line in cache.read_text().splitlines())
    predict(model, items(3), cache=cache, progress=False)
    assert len(fake.calls) == 2  # everything cached: nothing generated


def test_bad_inputs_are_named(model: CovftModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unique.*\['q0'\]"):
        predict(model, items(1) + items(1), progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        predict(model, items(1), batch_size=0, progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"id": "a", "prediction": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_cache(bad)
    with pytest.raises(KeyError, match="unknown benchmark"):
        parse_benchmarks("gqa,vqav2")
    assert parse_benchmarks("textvqa, gqa") == ["gqa", "textvqa"]  # table order
    with pytest.raises(ValueError, match="exactly one of data_root"):
        collect_items("gqa")


def test_evaluate_scores_and_reports(
    model: CovftModel, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gqa = get_adapter("gqa").load(data_root / "gqa")
    monkeypatch.setattr(model, "generate", Answering(model, "No"))
    results = evaluate(model, {"gqa": gqa}, tmp_path / "run", run_name="always-no", progress=False)
    # answers: "dog", "no", "woman" -> one of three right, by the official rule
    assert results["scores"]["gqa"]["score"] == pytest.approx(100 / 3)
    assert results["scores"]["gqa"]["rules"] == "official"
    settings = json.loads((tmp_path / "run" / "eval_settings.json").read_text())
    identity = prediction_identity(model)  # the cache belongs to these weights (issue 13)
    assert settings == {"run": "always-no", "max_new_tokens": 128, "protocol": "llava15", **identity}
    assert results["summary"]["G"] == pytest.approx(100 / 3)
    assert results["summary"]["missing"] == [n for n in parse_benchmarks("all") if n != "gqa"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["scores"]["gqa"]["n"] == 3 and saved["run"] == "always-no"
    report = (tmp_path / "run" / "results.md").read_text()
    assert "| always-no |" in report and "33.33" in report
    assert read_cache(tmp_path / "run" / "predictions" / "gqa.jsonl") == {i["id"]: "No" for i in gqa}
    with pytest.raises(ValueError, match="other settings"):
        evaluate(model, {"gqa": gqa}, tmp_path / "run", run_name="another", progress=False)


def test_a_run_without_a_setting_the_saved_run_had_is_refused(
    model: CovftModel, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blind-control folder (settings with shuffle_images) must not serve a normal run its
    predictions: the settings are compared both ways."""
    gqa = get_adapter("gqa").load(data_root / "gqa")
    monkeypatch.setattr(model, "generate", Answering(model, "No"))
    evaluate(model, {"gqa": gqa}, tmp_path / "run", settings={"shuffle_images": 0}, progress=False)
    with pytest.raises(ValueError, match=r"other settings \{'shuffle_images': \(0, None\)\}"):
        evaluate(model, {"gqa": gqa}, tmp_path / "run", progress=False)


def test_text_only_and_mixed_batches_generate(model: CovftModel) -> None:
    text_only = {"id": "t", "image": None, "prompt": "Say hi", "context": "Say hi"}
    records = predict(model, [text_only, *items(1)], batch_size=2, max_new_tokens=2, progress=False)
    alone = predict(model, [text_only], max_new_tokens=2, progress=False)
    assert records[0]["prediction"] == alone[0]["prediction"]  # left padding does not change the answer


def test_shuffle_images_moves_every_image_within_its_benchmark() -> None:
    items = {
        "gqa": [{"id": f"g{i}", "prompt": f"q{i}", "answer": str(i), "image": f"img{i}"} for i in range(7)],
        "mme": [
            {"id": "m0", "prompt": "a", "image": "x0"},
            {"id": "m1", "prompt": "b", "image": None},
            {"id": "m2", "prompt": "c", "image": "x2"},
        ],
    }
    shuffled = shuffle_images(items, seed=3)
    gqa = shuffled["gqa"]
    # every item keeps its prompt and answer, gets another item's image, and no image is lost
    assert [s["prompt"] for s in gqa] == [i["prompt"] for i in items["gqa"]]
    assert all(s["image"] != f"img{k}" for k, s in enumerate(gqa))
    assert sorted(s["image"] for s in gqa) == sorted(i["image"] for i in items["gqa"])
    # the text-only item stays text-only; the two image items swap
    assert [s["image"] for s in shuffled["mme"]] == ["x2", None, "x0"]
    # the input is untouched and the permutation is a function of the seed
    assert items["gqa"][0]["image"] == "img0"
    assert shuffle_images(items, seed=3) == shuffled
    assert shuffle_images(items, seed=4)["gqa"] != gqa


def test_shuffle_images_keeps_scoring_units_together() -> None:
    # MME: two questions per image (unit image_id); MMVP: two images per pair (unit pair_id)
    mme = [{"id": f"{k}{q}", "prompt": q, "image_id": k, "image": f"mme{k}"} for k in range(4) for q in "ab"]
    mmvp = [
        {"id": f"p{k}{j}", "prompt": "Q", "pair_id": str(k), "image": f"v{k}{j}"}
        for k in range(3)
        for j in "xy"
    ]
    shuffled = shuffle_images({"mme": mme, "mmvp": mmvp}, seed=0)
    new_mme = shuffled["mme"]
    for k in range(4):  # both questions of an image get the same, other image
        first, second = new_mme[2 * k]["image"], new_mme[2 * k + 1]["image"]
        assert first == second != f"mme{k}"
    assert sorted({s["image"] for s in new_mme}) == [f"mme{k}" for k in range(4)]
    new_vp = shuffled["mmvp"]
    for k in range(3):  # a pair becomes another whole pair, its two images in order
        donor = new_vp[2 * k]["image"][1]
        assert donor != str(k)
        assert [new_vp[2 * k]["image"], new_vp[2 * k + 1]["image"]] == [f"v{donor}x", f"v{donor}y"]


def gold(name: str, item: dict) -> str:
    if name == "scienceqa_img":
        return "ABCDEFGH"[item["answer"]]
    return item["answers"][0] if name == "textvqa" else item["answer"]


def test_gold_answers_on_a_world_suite_summarise_to_100(
    model: CovftModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The world's MME has 5 subtasks (max 1000): it averages as MME/10, not the paper's MME/20."""
    from covft.eval import generate
    from covft.recipes.world import make_world

    make_world(tmp_path / "world", size=20, seed=0, suite_size=5, image_size=32, progress=False)
    suite = collect_items("all", suite=tmp_path / "world" / "suite")
    assert len({item["category"] for item in suite["mme"]}) == 5

    def answering(model, items, *, desc, **kwargs):
        return [{**item, "prediction": gold(desc, item)} for item in items]

    monkeypatch.setattr(generate, "predict", answering)
    results = evaluate(model, suite, tmp_path / "run", run_name="gold", progress=False)
    summary = results["summary"]
    assert summary["mme"] == pytest.approx(1000.0) and summary["mme_subtasks"] == 5
    assert [summary[key] for key in ("G", "K", "V", "Avg")] == pytest.approx([100.0] * 4)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["summary"]["mme_subtasks"] == 5
    assert "| 100.00 | 100.00 | 100.00 | 100.00 |" in (tmp_path / "run" / "results.md").read_text()
