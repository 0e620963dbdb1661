"""`covft export`: what it refuses and why, before anything is loaded or written."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import covft
from covft.cli import main
from covft.export.families import processor_for
from covft.strategies.base import STRATEGIES, Strategy

ARCHITECTURE_CHANGING = ["covft", "qavit", "qmoe", "vpt"]


def save_tiny(path: Path, method: str) -> Path:
    model = covft.build_model("tiny-test", vision_layers=4, seed=0, text_encoder="random-tiny")
    covft.apply_vft(model, method)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def freeze_checkpoint(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "freeze", "freeze")


def export(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["export", *map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_help_explains_what_exports_and_what_does_not(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "AutoModelForImageTextToText",
        "merge_and_unload",
        "--push-to-hub",
        "--overwrite",
        "qavit",
    ):
        assert needle in text


def test_the_stock_strategies_are_exactly_those_that_keep_or_fold_into_the_architecture():
    stock = {name for name, cls in STRATEGIES.items() if not cls.adds_beyond_stock}
    assert stock == {"freeze", "full", "lora", "dora", "bitfit", "selective"}
    for name in stock:  # a structure change that claims to export must fold itself away
        cls = STRATEGIES[name]
        assert not cls.changes_structure or cls.fold_into_stock is not Strategy.fold_into_stock, name


@pytest.mark.parametrize("method", ARCHITECTURE_CHANGING)
def test_architecture_changing_strategies_are_refused_with_stock_only_and_what_to_do(
    method, tmp_path, capsys
):
    checkpoint = save_tiny(tmp_path / "ckpt", method)
    status, _, err = export(capsys, checkpoint, tmp_path / "out", "--stock-only")
    assert status == 1
    assert f"strategy {method!r} cannot be exported to a stock transformers model" in err
    assert STRATEGIES[method].adds_beyond_stock in err
    assert (
        "Without --stock-only it exports as a directory that transformers loads with covft installed" in err
    )
    assert not (tmp_path / "out").exists()


def test_export_model_refuses_them_too_with_stock_only_and_leaves_the_model_alone(tmp_path):
    from covft.errors import NotExportableError
    from covft.export import export_model

    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=4, seed=0, text_encoder="random-tiny"), "vpt"
    )
    with pytest.raises(NotExportableError, match="'vpt'"):
        export_model(model, tmp_path / "out", stock_only=True)
    assert model.strategy.name == "vpt" and not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_named_with_what_is_expected(tmp_path, capsys):
    status, _, err = export(capsys, tmp_path / "nope", tmp_path / "out")
    assert status == 1
    assert f"{tmp_path / 'nope'} does not exist" in err and "covft_config.json" in err


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "holds no covft_config.json"),
        ({"config.json": "{}"}, "a Hugging Face model directory already"),
        ({"checkpoint-5/COMPLETE": ""}, "the run has not finished"),
        ({"covft_config.json": "{not json", "model.safetensors": ""}, "is not valid JSON"),
        ({"covft_config.json": '{"strategy": "lora"}'}, "has no model.safetensors"),
        ({"covft_config.json": '{"strategy": "lorra"}', "model.safetensors": ""}, "Did you mean 'lora'"),
    ],
)
def test_what_is_not_a_checkpoint_is_said(layout, message, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for name, text in layout.items():
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_text(text)
    status, _, err = export(capsys, checkpoint, tmp_path / "out")
    assert status == 1
    assert str(checkpoint) in err and message in err
    assert not (tmp_path / "out").exists()


def test_a_resumable_training_checkpoint_is_not_a_model(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("")
    status, _, err = export(capsys, checkpoint, tmp_path / "out")
    assert status == 1 and "resumable training checkpoint" in err and "output_dir" in err


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    save_tiny(broken, "freeze")
    weights = load_file(broken / "model.safetensors")
    weights.pop(next(iter(weights)))
    save_file(weights, broken / "model.safetensors")
    status, _, err = export(capsys, broken, tmp_path / "out")
    assert status == 1 and f"{broken} cannot be loaded as a covft checkpoint" in err and "missing" in err


def test_a_non_empty_output_is_refused_unless_overwrite_and_an_earlier_export(
    freeze_checkpoint, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    status, _, err = export(capsys, freeze_checkpoint, out)
    assert status == 1 and f"{out} exists and is not empty" in err and "--overwrite" in err
    status, _, err = export(capsys, freeze_checkpoint, out, "--overwrite")
    assert status == 1 and "is not an earlier export" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    (out / "notes.txt").unlink()
    status, stdout, _ = export(capsys, freeze_checkpoint, out)  # an empty directory is fine
    assert status == 0 and "LlavaForConditionalGeneration" in stdout and "strategy freeze" in stdout
    (out / "stale.bin").write_text("from an earlier export")
    status, _, err = export(capsys, freeze_checkpoint, out)
    assert status == 1 and "--overwrite" in err
    status, _, _ = export(capsys, freeze_checkpoint, out, "--overwrite")
    assert status == 0 and not (out / "stale.bin").exists() and (out / "model.safetensors").is_file()


def test_the_checkpoint_itself_is_never_the_output(freeze_checkpoint, capsys):
    for out in (freeze_checkpoint, freeze_checkpoint.parent):
        status, _, err = export(capsys, freeze_checkpoint, out, "--overwrite")
        assert status == 1 and "holds the checkpoint" in err
    assert (freeze_checkpoint / "covft_config.json").is_file()


def test_progress_and_summary_lines(freeze_checkpoint, tmp_path, capsys):
    assert main(["export", str(freeze_checkpoint), str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    for stage in ("loading", "folding", "writing"):
        assert f"covft export: {stage}" in captured.err
    summary = captured.out.splitlines()[0]
    model = covft.load_pretrained(freeze_checkpoint)
    assert f"{model.llava.num_parameters():,} parameters in float32" in summary
    assert "from_pretrained(" in captured.out


def test_an_unknown_family_says_which_ones_export():
    model = types.SimpleNamespace(config=types.SimpleNamespace(model_type="idefics3"))
    with pytest.raises(NotImplementedError, match="'idefics3'.*llava, llava_next, llava_onevision, qwen2_vl"):
        processor_for(model)


def test_a_model_saved_without_a_strategy_exports_as_it_is(tmp_path, capsys):
    model = covft.build_model("tiny-test", vision_layers=4, seed=0, text_encoder="random-tiny")
    model.save_pretrained(tmp_path / "ckpt")
    status, stdout, _ = export(capsys, tmp_path / "ckpt", tmp_path / "out")
    assert status == 0 and "strategy none: nothing to fold" in stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()
