"""A micro demo runs end to end, writes its report, and a rerun retrains nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from covft.cli.demo import add_arguments
from covft.eval.benchmarks import BENCHMARKS
from covft.recipes.demo import pretrain
from covft.recipes.demo.layout import read_stage_log
from covft.recipes.demo.pipeline import DemoError, DemoRun, run_demo
from covft.recipes.demo.report import PLOTS, grounding_text, verdict
from covft.recipes.demo.settings import micro
from covft.recipes.demo.stage2 import longest_first


def _weights(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("model.safetensors"))}


def test_micro_demo_end_to_end_and_rerun_reuses_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = DemoRun(
        out=out,
        settings=micro(),
        methods=["freeze", "covft"],
        cache_dir=tmp_path / "cache",
        progress=False,
        jobs=2,
        from_scratch=True,
    )
    results = run_demo(run)

    assert (out / "report.md").is_file() and (out / "results.json").is_file()
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 1000, plot
    saved = json.loads((out / "results.json").read_text())
    assert saved["methods"] == ["freeze", "covft"] == results["methods"]
    for method in ("freeze", "covft"):
        assert sorted(saved["scores"]["0"][method]) == sorted(BENCHMARKS)
        for key in ("G", "K", "V", "Avg"):
            assert saved["summary"][method][key]["mean"] is not None
    assert set(saved["routing"]) == {"covft"}  # routing entropy per CoMoE block, read from the trainer log
    assert all(0.0 <= b["entropy"] <= b["max_entropy"] + 1e-6 for b in saved["routing"]["covft"].values())
    report = (out / "report.md").read_text()
    assert "| Method | MME^P |" in report and "## Verdict" in report and "covft" in report
    subtasks = saved["mme_subtasks"]  # the suite's own MME subtasks: MME / (2 x subtasks) in G and Avg
    assert 1 <= subtasks <= 5 and f"averaged as MME/{2 * subtasks})" in report

    first = read_stage_log(out)
    ran = {e["stage"] for e in first if e["action"] == "ran"}
    assert {
        "pretrain/stage0",
        "pretrain/lm",
        "pretrain/stage1a",
        "pretrain/stage1b",
        "world",
        "stage2/seed0/freeze",
        "stage2/seed0/covft",
    } <= ran
    # every method starts stage 2 from the one starting point the recipe trained (here, from scratch)
    start = saved["starting_point"]
    assert start["shipped"] is False and start["recipe_key"] == micro().pretrain.key()
    for method in ("freeze", "covft"):
        config = yaml.safe_load((out / f"seed0/stage2/{method}/train_config.yaml").read_text())
        assert config["init_from"] == start["path"]
    assert "trained here by the recipe" in report
    assert {"eval/seed0/freeze", "eval/seed0/covft"} <= ran
    assert {"eval-shuffled/seed0/freeze", "eval-shuffled/seed0/covft"} <= ran
    # the blind control: same items, images permuted; the gain is the difference of the two Avgs
    shuffled_settings = json.loads((out / "seed0/eval-shuffled/covft/results.json").read_text())["settings"]
    assert shuffled_settings["shuffle_images"] == 0
    for method in ("freeze", "covft"):
        gain = saved["image_gain"][method]
        assert gain["Avg"]["mean"] == pytest.approx(saved["summary"][method]["Avg"]["mean"])
        assert gain["gain"]["mean"] == pytest.approx(gain["Avg"]["mean"] - gain["Avg_shuffled"]["mean"])
        assert sorted(saved["scores_images_shuffled"]["0"][method]) == sorted(BENCHMARKS)
    assert "blind control" in report
    # both stage-2 runs started from the same stage-1 checkpoint, with the same schedule and seed
    configs = [
        json.loads((out / f"seed0/stage2/{m}/train_summary.json").read_text()) for m in ("freeze", "covft")
    ]
    assert configs[0]["steps"] == configs[1]["steps"] == micro().stage2_steps

    stamps = _weights(out)
    assert len(stamps) == 2  # the two stage-2 models
    run_demo(replace(run, jobs=1))
    second = read_stage_log(out)[len(first) :]
    assert [e for e in second if e["action"] == "ran"] == []
    assert {e["stage"] for e in second if e["action"] == "reused"} >= ran
    assert _weights(out) == stamps  # nothing was retrained or rewritten

    # other settings in the same folder are refused instead of silently mixed
    with pytest.raises(DemoError, match="other settings"):
        run_demo(
            DemoRun(out=out, settings=micro(stage2_steps=4), methods=["freeze"], cache_dir=tmp_path / "cache")
        )


def test_demo_starts_from_a_shipped_folder_and_refuses_another_recipe(tmp_path: Path) -> None:
    settings = micro()
    final, summary = pretrain.pretrain(settings.pretrain, cache_dir=tmp_path / "train-cache", progress=False)
    shipped = pretrain.export(final, tmp_path / "shipped", settings.pretrain, command="test", summary=summary)
    out = tmp_path / "demo"
    run = DemoRun(out=out, settings=settings, methods=["freeze"], cache_dir=tmp_path / "cache", progress=False,
                  shipped=shipped)  # fmt: skip
    results = run_demo(run)
    log = read_stage_log(out)
    assert not [e for e in log if e["stage"].startswith("pretrain/")]  # nothing of the recipe ran here
    assert [e["action"] for e in log if e["stage"] == "starting point"] == ["reused"]
    assert results["starting_point"]["shipped"] is True
    config = yaml.safe_load((out / "seed0/stage2/freeze/train_config.yaml").read_text())
    assert config["init_from"] == str(shipped.resolve())
    assert "shipped with covft, hash-verified" in (out / "report.md").read_text()

    other = replace(settings, pretrain=replace(settings.pretrain, stage1_steps=3))
    with pytest.raises(DemoError, match=r"fields that differ: stage1_steps\)\. Fix"):
        run_demo(replace(run, out=tmp_path / "other", settings=other))


def test_verdict_reports_what_the_numbers_say() -> None:
    def entry(avg: float, sd: float | None = None) -> dict:
        return {"Avg": {"mean": avg, "sd": sd, "per_seed": [avg]}}

    assert "does not beat" in verdict({"covft": entry(40.0), "full": entry(41.0), "freeze": entry(30.0)}, 1.0)
    assert "no reliable difference" in verdict({"covft": entry(41.0), "full": entry(40.0)}, 1.0)
    assert "ahead by more than the noise" in verdict({"covft": entry(50.0), "full": entry(40.0)}, 1.0)
    assert "no reliable difference" in verdict({"covft": entry(50.0, 6.0), "full": entry(40.0, 1.0)}, 1.0)


def test_grounding_sentence_follows_the_image_gain() -> None:
    def entry(real: float, blind: float) -> dict:
        one = {"mean": real, "sd": None, "per_seed": [real]}
        return {
            "Avg": one,
            "Avg_shuffled": {"mean": blind, "sd": None, "per_seed": [blind]},
            "gain": {"mean": real - blind, "sd": None, "per_seed": [real - blind]},
        }

    table, sentence = grounding_text({"freeze": entry(30.0, 29.5), "covft": entry(31.0, 30.0)}, 1.0)
    assert (
        sentence.startswith("No method's answers rest on the image")
        and "largest image gain 1.00, covft" in sentence
    )
    assert "| freeze | 30.00 | 29.50 | 0.50 |" in table
    _, sentence = grounding_text({"freeze": entry(40.0, 25.0), "covft": entry(41.0, 30.0)}, 1.0)
    assert sentence.startswith("The models use the image: image gain up to 15.00 points (freeze)")


def test_cli_arguments() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--methods", "freeze", "lora", "--seeds", "3", "--out", "x"])
    assert args.quick and args.methods == ["freeze", "lora"] and args.seeds == 3 and args.out == Path("x")
    defaults = parser.parse_args([])
    assert defaults.preset == "tiny" and defaults.stage2_steps is None and defaults.jobs is None
    assert parser.parse_args(["--stage2-steps", "900"]).stage2_steps == 900


def test_set_overrides_parse_by_field_type_and_name_bad_keys() -> None:
    from covft.cli.demo import apply_overrides
    from covft.recipes.demo.settings import FULL

    changed = apply_overrides(
        FULL,
        [
            "world_size=20000",
            "stage2_lr=1e-4",
            "group_by_modality_length=false",
            "pretrain.vision_hidden=none",
            "pretrain.stage0.steps=7",
        ],
    )
    assert (changed.world_size, changed.stage2_lr, changed.group_by_modality_length) == (20000, 1e-4, False)
    assert changed.pretrain.vision_hidden is None and changed.stage2_steps == FULL.stage2_steps
    assert (
        changed.pretrain.stage0.steps == 7
        and changed.pretrain.stage0.batch_size == FULL.pretrain.stage0.batch_size
    )
    assert changed.pretrain.key() != FULL.pretrain.key()
    with pytest.raises(ValueError, match="Did you mean 'stage2_steps'"):
        apply_overrides(FULL, ["stage2_step=3"])
    with pytest.raises(ValueError, match="is not key=value"):
        apply_overrides(FULL, ["stage2_steps"])
    with pytest.raises(ValueError, match="cannot override 'pretrain.stage0'"):
        apply_overrides(FULL, ["pretrain.stage0=3"])
    with pytest.raises(ValueError, match="Did you mean 'pretrain.lm_steps'"):
        apply_overrides(FULL, ["pretrain.lm_step=3"])


def test_an_unknown_method_is_named_with_the_closest_one_before_anything_runs(tmp_path):
    run = DemoRun(
        out=tmp_path / "demo", settings=micro(), methods=["freeze", "covtf"], cache_dir=tmp_path / "c"
    )
    with pytest.raises(DemoError, match=r"--methods: unknown method 'covtf'\. Did you mean 'covft'\?"):
        run_demo(run)
    assert not (tmp_path / "demo").exists()


def test_worker_pool_starts_the_costliest_method_first() -> None:
    # two workers over freeze 226 s, full 280, lora 269, covft 414: the report's order finishes
    # after 280 + 414 s, longest-first after max(414 + 226, 280 + 269) s
    assert longest_first(["freeze", "full", "lora", "covft"]) == ["covft", "full", "lora", "freeze"]
    assert longest_first(["freeze", "my_strategy", "covft"]) == ["my_strategy", "covft", "freeze"]


def test_stage2_all_runs_every_seed_and_method_once_costliest_first(monkeypatch, tmp_path: Path) -> None:
    import covft.recipes.demo.stage2 as stage2

    calls = []

    def fake(run, seed, method, start, threads=None, context=None):
        calls.append((seed, method))
        return {"real": {"seed": seed}, "shuffled": {"method": method}}

    monkeypatch.setattr(stage2, "stage2_and_eval", fake)
    run = DemoRun(out=tmp_path, settings=micro(), methods=["freeze", "covft"], jobs=1)
    results = stage2.stage2_all(run, 2, start=None, context=None)
    assert calls == [(0, "covft"), (1, "covft"), (0, "freeze"), (1, "freeze")]
    assert {
        s: {m: (r["real"]["seed"], r["shuffled"]["method"]) for m, r in by.items()}
        for s, by in results.items()
    } == {
        0: {"freeze": (0, "freeze"), "covft": (0, "covft")},
        1: {"freeze": (1, "freeze"), "covft": (1, "covft")},
    }
