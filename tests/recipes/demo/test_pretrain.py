"""The starting point's recipe at micro scale: what each stage trains, export, hash verification."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from covft.recipes.demo import pretrain
from covft.recipes.demo.settings import FULL, micro_pretrain

LM = ("llava.model.language_model.", "llava.lm_head.")
TOWER = "llava.model.vision_tower."
PROJECTOR = "llava.model.multi_modal_projector."


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The micro recipe trained once: (cache folder, final checkpoint, summary).

    One thread while it trains, restored afterwards: a thread count leaking out of this module
    would make later tests that compare a subprocess with this process differ in float bits.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cache = tmp_path_factory.mktemp("cache")
        final, summary = pretrain.pretrain(micro_pretrain(), cache_dir=cache, progress=False)
    finally:
        torch.set_num_threads(before)
    return cache, final, summary


def _part(state: dict, prefix: str | tuple[str, ...]) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_stage_trains_what_the_recipe_says(recipe) -> None:
    cache, final, summary = recipe
    folders = pretrain.stage_folders(micro_pretrain(), cache)
    assert final == folders["stage1b"]
    lm = load_file(str(folders["lm"] / "model.safetensors"))
    stage1a = load_file(str(folders["stage1a"] / "model.safetensors"))
    stage1b = load_file(str(final / "model.safetensors"))
    tower = load_file(str(_stage0_weights(cache)))
    # stage 1a: the stage-0 tower and the text-pretrained LM, only the projector moves
    assert _equal({k.removeprefix(TOWER): v for k, v in _part(stage1a, TOWER).items()}, tower)
    assert _equal(_part(stage1a, LM), _part(lm, LM))
    # stage 1b (the default "full"): projector, LM and the tower's feeding blocks train
    assert micro_pretrain().stage1b_method == "full"
    assert not _equal(_part(stage1b, TOWER), _part(stage1a, TOWER))
    assert not _equal(_part(stage1b, LM), _part(stage1a, LM))
    assert not _equal(_part(stage1b, PROJECTOR), _part(stage1a, PROJECTOR))
    # the LM corpus describes scenes in words; stage 1 trains on dense captions
    corpus = json.loads((folders["world"] / "lm_corpus.json").read_text())
    assert any(" at " in r["conversations"][0]["value"] for r in corpus)
    # stage 1b adds grounded captions of the same scenes to the dense captions
    assert micro_pretrain().stage1b_grounded_turns > 0
    config = yaml.safe_load((final / "train_config.yaml").read_text())
    assert [Path(f).name for f in config["data"]["train"]] == [
        "dense_captions.json",
        "grounded_captions.json",
    ]
    assert json.loads((folders["world"] / "grounded_captions.json").read_text())
    for stage in ("lm", "stage1a", "stage1b"):
        assert summary[stage]["steps"] == 2 and len(summary[stage]["curve"]) == 2
        # every stage's training-start audit passes: the text-only LM stage does not declare the
        # projector, which no image reaches
        audit = json.loads((folders[stage] / "train_summary.json").read_text())["audit"]
        assert audit["passed"], (stage, audit)
    assert summary["stage0"]["config"]["steps"] == 4 and len(summary["stage0"]["curve"]) == 4


def _stage0_weights(cache: Path) -> Path:
    (weights,) = (cache / "stage0").glob("*/vision_tower.safetensors")
    return weights


def test_a_finished_recipe_is_reused_and_a_later_change_keeps_earlier_stages(recipe) -> None:
    cache, final, _ = recipe
    stamp = (final / "model.safetensors").stat().st_mtime_ns
    again, _ = pretrain.pretrain(micro_pretrain(), cache_dir=cache, progress=False)
    assert again == final and (final / "model.safetensors").stat().st_mtime_ns == stamp
    before = pretrain.stage_folders(micro_pretrain(), cache)
    after = pretrain.stage_folders(micro_pretrain(stage1b_steps=3), cache)
    assert [after[k] == before[k] for k in ("world", "lm", "stage1a", "stage1b")] == [True, True, True, False]
    grounded = pretrain.stage_folders(micro_pretrain(stage1b_grounded_turns=0), cache)
    assert [grounded[k] == before[k] for k in ("world", "lm", "stage1a", "stage1b")] == [
        True,
        True,
        True,
        False,
    ]


def test_a_changed_tokenizer_or_stage0_version_retrains_what_depends_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LM's folder depends on the tokenizer's version, stage 1's on stage 0's: a bumped version
    must not reuse a stage trained on the old token ids or the old tower."""
    before = pretrain.stage_folders(micro_pretrain(), tmp_path)
    monkeypatch.setattr(pretrain, "TOKENIZER_VERSION", "999")
    tokenizer = pretrain.stage_folders(micro_pretrain(), tmp_path)
    assert [tokenizer[k] == before[k] for k in ("world", "lm", "stage1a", "stage1b")] == [
        True,
        False,
        False,
        False,
    ]
    monkeypatch.undo()
    monkeypatch.setattr(pretrain, "STAGE0_VERSION", "999")
    stage0 = pretrain.stage_folders(micro_pretrain(), tmp_path)
    assert [stage0[k] == before[k] for k in ("world", "lm", "stage1a", "stage1b")] == [
        True,
        True,
        False,
        False,
    ]


def test_export_verifies_and_names_what_is_wrong(
    recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, final, summary = recipe
    settings = micro_pretrain()
    shipped = pretrain.export(
        final, tmp_path / "shipped", settings, command="covft demo pretrain", summary=summary
    )
    assert pretrain.verify(shipped, settings) == shipped
    sums = dict(line.split()[::-1] for line in (shipped / pretrain.SUMS_FILE).read_text().splitlines())
    assert sums["model.safetensors"] == pretrain.file_sha256(final / "model.safetensors")
    config = json.loads((shipped / "covft_config.json").read_text())
    assert config["base"]["kwargs"] == settings.model_options()  # no path of the machine that trained it
    recipe_record = json.loads((shipped / pretrain.RECIPE_FILE).read_text())
    assert recipe_record["key"] == settings.key() and recipe_record["command"] == "covft demo pretrain"

    with pytest.raises(
        pretrain.PretrainedMismatch,
        match=r"fields that differ: lm_steps\)\. Fix: `covft demo --from-scratch`",
    ):
        pretrain.verify(shipped, replace(settings, lm_steps=3))
    assert recipe_record["code_versions"] == pretrain.code_versions()
    monkeypatch.setattr(pretrain, "WORLD_VERSION", "999")  # the world's code changed since
    with pytest.raises(
        pretrain.PretrainedMismatch, match=r"made by older code than this one \(world \d+ -> 999"
    ):
        pretrain.verify(shipped, settings)
    monkeypatch.undo()
    (shipped / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(pretrain.PretrainedMismatch, match="model.safetensors is missing or damaged"):
        pretrain.verify(shipped, settings)
    with pytest.raises(pretrain.PretrainedMismatch, match="no pretrained starting point"):
        pretrain.verify(tmp_path / "nothing", settings)


def test_the_shipped_starting_point_matches_the_code_recipe() -> None:
    """The committed weights are the ones `covft demo pretrain` writes for FULL's recipe."""
    assert pretrain.verify(pretrain.SHIPPED, FULL.pretrain) == pretrain.SHIPPED
