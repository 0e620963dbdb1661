"""The lmms-eval plugin at its interface: fake lmms-eval modules, fake requests, a tiny checkpoint.

lmms-eval itself is not installed in the test environment (it pulls a CUDA build of torch), so
these tests stand in its two touch points: ``lmms_eval.api.model.lmms`` (the base class) and
``lmms_eval.models.registry_v2.ModelManifest`` (what the entry point returns), and requests shaped like its
``Instance`` (``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``; multi-round
tasks add ``doc_to_text`` after ``doc_to_visual``, lmms_eval/api/task.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests.eval.test_cli import save_tiny_checkpoint

from covft.eval import lmms as plugin
from covft.eval.generate import build_sample
from covft.models.model import CovftModel


class Request:
    """Shaped like lmms-eval's ``Instance``: only ``args`` is read."""

    def __init__(self, *args: object) -> None:
        self.args = args


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("lmms"))


@pytest.fixture
def fake_lmms_eval(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    class lmms:  # noqa: N801 - lmms-eval's name
        def __init__(self) -> None:
            self._rank, self._world_size, self.task_dict = 0, 1, {}

    @dataclasses.dataclass(frozen=True)
    class ModelManifest:  # lmms_eval/models/registry_v2.py (0.6 and later), the fields covft sets
        model_id: str
        simple_class_path: str | None = None

    registry_v2 = types.ModuleType("lmms_eval.models.registry_v2")
    registry_v2.ModelManifest = ModelManifest
    model_module = types.ModuleType("lmms_eval.api.model")
    model_module.lmms = lmms
    api = types.ModuleType("lmms_eval.api")
    api.model = model_module
    models = types.ModuleType("lmms_eval.models")
    models.registry_v2 = registry_v2
    root = types.ModuleType("lmms_eval")
    root.api, root.models = api, models
    for name, module in {
        "lmms_eval": root,
        "lmms_eval.api": api,
        "lmms_eval.api.model": model_module,
        "lmms_eval.models": models,
        "lmms_eval.models.registry_v2": registry_v2,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(plugin, "_CLASS", None)
    return registry_v2


TASK = {
    "gqa_lite": {
        "test": [
            {"question": "What colour is it?", "image": Image.new("RGB", (12, 12), (200, 0, 0))},
            {"question": "Is it dark?", "image": Image.new("RGB", (12, 12), (0, 0, 30))},
            {"question": "Say a word.", "image": None},
        ]
    }
}
SUFFIX = "\nAnswer the question using a single word or phrase."


def visual(doc: dict) -> list:
    return [doc["image"]] if doc["image"] is not None else []


def test_import_needs_no_lmms_eval_until_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # makes `import lmms_eval` fail
    monkeypatch.setattr(plugin, "_CLASS", None)
    with pytest.raises(ImportError, match=r"pip install covft\[lmms\]"):
        plugin.CovftLMM  # noqa: B018 - the attribute access is the use


def test_the_entry_point_registers_the_model_by_lmms_evals_manifest(fake_lmms_eval: types.ModuleType) -> None:
    """lmms-eval (0.6+) loads every ``lmms_eval.models`` entry point and calls what it finds, expecting
    a ModelManifest: the class itself would be called without ``pretrained`` and fail."""
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()  # no tomllib on 3.10
    section = pyproject.split('[project.entry-points."lmms_eval.models"]')[1].split("\n[")[0]
    target = re.search(r'^covft = "([^"]+)"', section, re.MULTILINE).group(1)
    module, _, attribute = target.partition(":")
    manifest = getattr(importlib.import_module(module), attribute)()
    assert isinstance(manifest, fake_lmms_eval.ModelManifest) and manifest.model_id == "covft"
    path, _, name = manifest.simple_class_path.rpartition(".")
    assert getattr(importlib.import_module(path), name) is plugin.CovftLMM  # what lmms-eval imports


def test_without_a_device_the_model_goes_where_lmms_evals_own_models_go(
    fake_lmms_eval: types.ModuleType, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(CovftModel, "to", lambda self, device: moved.append(device) or self)
    plugin.CovftLMM(pretrained=str(checkpoint))
    assert moved == ["cuda"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plugin.CovftLMM(pretrained=str(checkpoint))
    assert moved == ["cuda"]  # CPU: nothing to move


def test_generate_until_answers_fake_requests(
    fake_lmms_eval: types.ModuleType, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = plugin.CovftLMM
    lm = cls(pretrained=str(checkpoint), batch_size="2", max_new_tokens="3")
    lm.task_dict = TASK
    requests = [
        Request(f"<image>\n{doc['question']}{SUFFIX}", {"max_new_tokens": 3, "until": ["\n"]}, visual, i, "gqa_lite", "test")
        for i, doc in enumerate(TASK["gqa_lite"]["test"])
    ]  # fmt: skip
    answers = lm.generate_until(requests)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)

    seen = answer_red(monkeypatch)
    lm.batch_size_per_gpu = 3  # one batch: two images and a text-only document
    assert lm.generate_until(requests) == ["red", "red", "red"]  # cut at the task's `until`
    assert len(seen) == 1 and seen[0]["pixel_values"].shape[0] == 2
    contexts = lm.model.text_encoder.tokenizer(  # the router reads the whole prompt, as in training
        [f"What colour is it? {SUFFIX.strip()}", f"Is it dark? {SUFFIX.strip()}"],
        padding=True,
        return_tensors="pt",
    )
    assert torch.equal(seen[0]["context_input_ids"], contexts["input_ids"])


def answer_red(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Makes ``CovftModel.generate`` answer "red\\nand more" to everything; returns the batches it saw."""
    seen: list[dict] = []

    def answer(self: CovftModel, **batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch)
        ids = self.tokenizer("red\nand more", add_special_tokens=False)["input_ids"]
        return torch.cat([batch["input_ids"], torch.tensor(ids).expand(batch["input_ids"].shape[0], -1)], 1)

    monkeypatch.setattr(CovftModel, "generate", answer)
    return seen


def test_generate_until_multi_round_follows_the_task(
    fake_lmms_eval: types.ModuleType, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = plugin.CovftLMM(pretrained=str(checkpoint))
    lm.task_dict = TASK
    calls: list[dict] = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        """A two-round task shaped like lmms-eval's: round 1 asks about the first answer, then stops."""
        calls.append({"outputs": list(previous_output), "round": round_idx, "info": previous_round_info})
        if round_idx == 2:
            return None, None, True, [*previous_output], None
        context = f"You said {previous_output[-1]}. Why?"
        return [doc["image"]], context, False, previous_output, {"asked": round_idx}

    seen = answer_red(monkeypatch)
    kwargs = {"max_new_tokens": 4, "until": "\n"}
    requests = [
        Request("<image>\nWhat colour is it?", kwargs, visual, doc_to_text, 0, "gqa_lite", "test"),
        Request("Say a word.", kwargs, visual, doc_to_text, 2, "gqa_lite", "test"),
    ]
    assert lm.generate_until_multi_round(requests) == [["red", "red"], ["red", "red"]]
    assert [(c["round"], c["outputs"], c["info"]) for c in calls[:2]] == [
        (1, ["red"], None),
        (2, ["red", "red"], {"asked": 1}),
    ]
    second_round = lm.model.tokenizer.decode(seen[1]["input_ids"][0])
    assert "You said red. Why?" in second_round and "pixel_values" in seen[1]
    assert "pixel_values" not in seen[2]  # the text-only document stays text-only


def test_loglikelihood_matches_the_model_loss(fake_lmms_eval: types.ModuleType, checkpoint: Path) -> None:
    lm = plugin.CovftLMM(pretrained=str(checkpoint))
    lm.task_dict = TASK
    context = "<image>\nWhat colour is it?" + SUFFIX
    [(logp, greedy)] = lm.loglikelihood([Request(context, lambda doc: "red", visual, 0, "gqa_lite", "test")])
    # independently: the model's own cross-entropy over the answer tokens " red" (vicuna puts a space)
    item, _ = lm._item((context, {}, visual, 0, "gqa_lite", "test"))
    batch = lm.model.collate([build_sample(item)], for_generation=True)
    answer = torch.tensor([lm.model.tokenizer(" red", add_special_tokens=False)["input_ids"]])
    input_ids = torch.cat([batch["input_ids"], answer], 1)
    labels = torch.cat([torch.full_like(batch["input_ids"], -100), answer], 1)
    with torch.no_grad():
        loss = lm.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            labels=labels,
            pixel_values=batch["pixel_values"],
            context_input_ids=batch["context_input_ids"],
            context_attention_mask=batch.get("context_attention_mask"),
        ).loss
    assert logp == pytest.approx(-float(loss) * answer.shape[1], rel=1e-4)
    assert logp < 0.0 and greedy is False  # a random model does not say " red"


def test_the_scored_continuation_is_what_the_template_trains_on() -> None:
    """vicuna answers after a space (``ASSISTANT: red``), a chat template right after its prompt:
    the scored tokens must be the ones training labels, not a space the model never writes."""
    import covft
    from covft.data.collator import IGNORE_INDEX

    model = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=0)
    assert plugin.continuation(model, "red") == plugin.continuation(model, " red") == " red"
    model.tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    model.template = "chat"
    assert plugin.continuation(model, "A") == "A"
    human = {"from": "human", "value": "Which? Answer with the letter."}
    trained = model.collate(
        [{"id": "x", "image": None, "conversations": [human, {"from": "gpt", "value": "A"}]}]
    )
    labels = trained["labels"][0]
    scored = model.tokenizer(plugin.continuation(model, "A"), add_special_tokens=False)["input_ids"]
    assert labels[labels != IGNORE_INDEX][: len(scored)].tolist() == scored


def test_bad_model_args_and_documents(fake_lmms_eval: types.ModuleType, checkpoint: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown model_args \['conv_template'\]"):
        plugin.CovftLMM(pretrained=str(checkpoint), conv_template="vicuna")
    lm = plugin.CovftLMM(pretrained=str(checkpoint))
    lm.task_dict = TASK
    with pytest.raises(KeyError, match="no document 7 in task 'gqa_lite'"):
        lm.generate_until([Request("q", {}, visual, 7, "gqa_lite", "test")])
    two = Request("q", {}, lambda doc: [doc["image"], doc["image"]], 0, "gqa_lite", "test")
    with pytest.raises(ValueError, match="2 images"):
        lm.generate_until([two])
