"""`covft eval` and `covft compare` end to end on a tiny saved checkpoint and every adapter's fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import covft
from covft.cli import main
from covft.eval.benchmarks import BENCHMARKS, ImageRef, write_suite
from covft.eval.cache import read_cache
from covft.eval.report import COLUMN_TITLES
from covft.models.model import CovftModel


def save_tiny_checkpoint(directory: Path) -> Path:
    """A tiny CoVFT model (2 vision blocks, random text encoder) saved as ``directory/tiny-covft``."""
    model = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=0)
    covft.apply_vft(model, "covft")
    model.save_pretrained(directory / "tiny-covft")
    return directory / "tiny-covft"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``CovftModel.generate`` calls (batch sizes), still generating for real."""
    calls: list[int] = []
    original = CovftModel.generate

    def counting(self: CovftModel, *args, **kwargs):
        calls.append(int(kwargs["input_ids"].shape[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CovftModel, "generate", counting)
    return calls


def test_eval_every_benchmark_then_resume(
    checkpoint: Path,
    llava_tree: Path,
    tmp_path: Path,
    generate_calls: list[int],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(
        llava_tree
    )  # `--data-root playground/data/eval`, as in LLaVA's and the release's scripts
    out = tmp_path / "run"
    argv = ["eval", str(checkpoint), "--benchmarks", "all", "--data-root", "playground/data/eval"]
    argv += [
        "--out",
        str(out),
        "--limit",
        "1",
        "--batch-size",
        "16",
        "--max-new-tokens",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert len(generate_calls) == 12  # one batch per benchmark
    results = json.loads((out / "results.json").read_text())
    assert list(results["scores"]) == list(BENCHMARKS)
    assert results["summary"]["missing"] == []
    for key in ("G", "K", "V", "Avg"):
        assert 0.0 <= results["summary"][key] <= 100.0
    # the summary is the paper's: Avg over the 12 scores with MME / 20
    scaled = [s["score"] / (20 if n == "mme" else 1) for n, s in results["scores"].items()]
    assert results["summary"]["Avg"] == pytest.approx(sum(scaled) / 12)
    # --limit counts units: one MME image (2 questions), one MMBench question (4 rotations), one MMVP pair
    assert results["scores"]["mme"]["n"] == 2 and results["scores"]["mmbench_en"]["n"] == 4
    for name in BENCHMARKS:
        cached = read_cache(out / "predictions" / f"{name}.jsonl")
        assert len(cached) == results["scores"][name]["n"]
    table = (out / "results.md").read_text()
    header = table.splitlines()[2]
    assert all(title in header for title in COLUMN_TITLES.values()) and "Avg." in header
    assert "| tiny-covft |" in capsys.readouterr().out
    settings = json.loads((out / "eval_settings.json").read_text())
    assert settings["protocol"] == "llava15" and settings["textvqa_ocr_tokens"] is True
    assert all(s["rules"] == "official" for s in results["scores"].values())

    generate_calls.clear()
    assert main(argv) == 0
    assert generate_calls == []  # everything came from the prediction cache
    assert json.loads((out / "results.json").read_text())["scores"] == results["scores"]
    assert main([*argv, "--protocol", "lmms-eval"]) == 2  # other prompts: not into the same directory
    assert "other settings" in capsys.readouterr().err
    lmms = tmp_path / "lmms"
    lmms_argv = ["eval", str(checkpoint), "--benchmarks", "mmvp", "--data-root", "playground/data/eval"]
    assert main([*lmms_argv, "--out", str(lmms), "--protocol", "lmms-eval", "--max-new-tokens", "2"]) == 0
    assert json.loads((lmms / "eval_settings.json").read_text())["protocol"] == "lmms-eval"


def test_eval_suite_and_compare(
    checkpoint: Path, tmp_path: Path, generate_calls: list[int], capsys: pytest.CaptureFixture
) -> None:
    suite = tmp_path / "suite"
    image = ImageRef(image=Image.new("RGB", (16, 16), (200, 30, 30)))
    gqa = [
        {"id": f"g{i}", "image": image, "prompt": f"What colour? {i}\nAnswer the question using a single word or phrase.",
         "context": f"What colour? {i}", "answer": "red"}
        for i in range(3)
    ]  # fmt: skip
    options = {"A": "red", "B": "blue"}
    mmvp = [
        {"id": f"m{i}", "image": image, "prompt": "Which colour?\nA. red\nB. blue\nAnswer with the option's letter.",
         "context": "Which colour?\nA. red\nB. blue", "pair_id": "0", "options": options, "answer": "A"}
        for i in range(2)
    ]  # fmt: skip
    write_suite(suite, "gqa", gqa)
    write_suite(suite, "mmvp", mmvp)
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        argv = ["eval", str(checkpoint), "--suite", str(suite), "--out", str(out), "--name", name]
        assert main([*argv, "--max-new-tokens", "2", "--no-progress"]) == 0
        results = json.loads((out / "results.json").read_text())
        assert sorted(results["scores"]) == ["gqa", "mmvp"]
        assert results["scores"]["gqa"]["n"] == 3 and results["scores"]["mmvp"]["n"] == 2
        assert results["summary"]["covers"]["Avg"] == ["gqa", "mmvp"]
        assert results["settings"]["protocol"] == "suite" and results["scores"]["gqa"]["rules"] == "tolerant"
        runs.append(out)
    assert sum(generate_calls) == 2 * 5
    blind = tmp_path / "blind"
    argv = ["eval", str(checkpoint), "--suite", str(suite), "--out", str(blind), "--shuffle-images", "1"]
    assert main([*argv, "--max-new-tokens", "2", "--no-progress"]) == 0
    results = json.loads((blind / "results.json").read_text())
    assert results["settings"]["shuffle_images"] == 1 and results["scores"]["gqa"]["n"] == 3
    assert "shuffle_images" not in json.loads((runs[0] / "results.json").read_text())["settings"]

    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| first |" in table and "| second |" in table
    png = (tmp_path / "cmp" / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| first |" in capsys.readouterr().out


def test_cli_errors_are_clear(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(checkpoint), "--suite", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "suite directory not found" in capsys.readouterr().err
    argv = [
        "eval",
        str(checkpoint),
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path),
        "--benchmarks",
        "gqa",
    ]
    assert main(argv) == 2
    assert "gqa: missing" in capsys.readouterr().err
    assert (
        main(["eval", str(checkpoint), "--data-root", str(tmp_path), "--out", "x", "--benchmarks", "vqa"])
        == 2
    )
    assert "unknown benchmark" in capsys.readouterr().err
    suite = ["eval", str(checkpoint), "--suite", str(tmp_path), "--out", "x", "--protocol", "llava15"]
    assert main(suite) == 2
    assert "a suite's items carry their own prompt and router text" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "not an evaluated run" in capsys.readouterr().err


def test_eval_on_cuda_without_cuda_stops_before_loading(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with a GPU
    argv = ["eval", str(checkpoint), "--suite", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda:0, but CUDA is not available here" in err and "use --device cpu" in err
    assert "suite directory not found" not in err  # the device is checked first


def test_compare_averages_mme_over_each_runs_recorded_subtasks(tmp_path: Path) -> None:
    """A results.json from before ``mme_subtasks`` was recorded averages MME as the paper's MME/20."""
    from covft.cli.compare import compare_runs

    entry = {"score": 1000.0, "metric": "sum over subtasks of acc + acc+", "n": 20}
    runs = {
        "old": {"run": "old", "scores": {"mme": entry}, "summary": {"G": 50.0}},
        "suite": {"run": "suite", "scores": {"mme": entry}, "summary": {"G": 100.0, "mme_subtasks": 5}},
    }
    for name, results in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    paths = compare_runs([tmp_path / "old", tmp_path / "suite"], tmp_path / "cmp")
    rows = {line.split(" | ")[0]: line for line in paths["table"].read_text().splitlines()}
    assert rows["| old"].endswith("| 50.00 | – | – | 50.00 |")
    assert rows["| suite"].endswith("| 100.00 | – | – | 100.00 |")
    assert "suite: MME/10 (5 subtasks)" in paths["table"].read_text()


@pytest.mark.parametrize(
    ("flag", "value"), [("--batch-size", "0"), ("--batch-size", "-1"), ("--max-new-tokens", "0")]
)
def test_eval_refuses_a_non_positive_size_before_building_the_model_or_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, flag: str, value: str
) -> None:
    import covft.strategies

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the arguments were checked")

    monkeypatch.setattr(covft.strategies, "build_model", no_model)
    suite = tmp_path / "suite"
    image = ImageRef(image=Image.new("RGB", (16, 16), (200, 30, 30)))
    write_suite(
        suite,
        "gqa",
        [{"id": "g0", "image": image, "prompt": "Colour?", "context": "Colour?", "answer": "red"}],
    )
    out = tmp_path / "x"
    assert main(["eval", "tiny-test", "--suite", str(suite), "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be >= 1, got {value}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b'{"run": "x", "summary": {}}', 'is not an evaluated run\'s results.json: it has no "scores"'),
        (b'[{"score": 1.0}]', 'is not an evaluated run\'s results.json: it has no "scores"'),
        (b'{"scores": {"gqa": {"n": 2}}}', 'is not an evaluated run\'s results.json: it has no "scores"'),
        (b'{"run": "x",\n "scores": {\n  "gqa": {\n    "score":', "is not valid JSON at line 4:13"),
        ('{"run": "caf\u00e9"}'.encode("latin-1"), "is not UTF-8 text (byte 12)"),
    ],
    ids=["no scores", "a list", "a score missing", "truncated", "latin-1"],
)
def test_compare_names_a_results_file_that_is_not_one_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, named: str
) -> None:
    from covft.eval.generate import ResultsFileError, load_results

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_bytes(content)
    with pytest.raises(ResultsFileError, match="Fix: pass a run directory that covft eval wrote"):
        load_results(run)
    out = tmp_path / "cmp"
    assert main(["compare", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"covft compare: error: {run / 'results.json'} {named}"), err
    assert "Traceback" not in err and "--debug" in err and len(err.splitlines()) == 2
    assert not out.exists()
