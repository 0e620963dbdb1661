"""`covft downstream`: E/F/O arithmetic, config checks, and a tiny end-to-end study with two strategies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import covft
from covft.cli import main
from covft.eval.benchmarks import ImageRef, write_suite
from covft.models.model import CovftModel
from covft.recipes.downstream import DownstreamConfigError, llava_items, load_config, strategy_spec
from covft.recipes.downstream_study import build_base, downstream_accuracy, exact_match, measure

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (220, 220, 20)}


def test_exact_match_normalises() -> None:
    records = [
        {"prediction": "The Red.", "answer": "red"},
        {"prediction": "blue", "answer": "a blue"},
        {"prediction": "green square", "answer": "green"},
        {"prediction": "", "answer": "yellow"},
    ]
    assert exact_match(records) == 50.0


def test_strategy_shorthands_and_config_errors(tmp_path: Path) -> None:
    assert strategy_spec("last") == strategy_spec(
        {"name": "last", "method": "selective", "options": {"top_k": 1}}
    )
    assert strategy_spec("top3").options == {"top_k": 3}
    assert strategy_spec("lora").method == "lora"
    with pytest.raises(DownstreamConfigError, match="Did you mean 'lora'.*'top<k>'"):
        strategy_spec("lorra")
    base = ["base=tiny-test", "downstream.train=t.json", "downstream.eval=e.json", "upstream.suite=s"]
    config = load_config(None, [*base, "strategies=[lora,top2]", "train.max_steps=2"])
    assert [s.name for s in config.strategies] == ["lora", "top2"] and config.train == {"max_steps": 2}
    with pytest.raises(DownstreamConfigError, match="Did you mean 'downstream.image_folder'"):
        load_config(None, [*base, "strategies=[lora]", "downstream.image_foldr=x"])
    with pytest.raises(DownstreamConfigError, match="no strategies"):
        load_config(None, base)
    with pytest.raises(DownstreamConfigError, match="exactly one of upstream.suite"):
        load_config(None, [*base[:3], "strategies=[full]"])


def test_preset_base_is_seeded_like_the_trainer() -> None:
    options = [
        "base=tiny-test",
        "downstream.train=t",
        "downstream.eval=e",
        "upstream.suite=s",
        "strategies=[full]",
    ]
    small = ["base_options={vision_layers: 1, text_encoder: random-tiny}"]
    config = load_config(None, [*options, *small, "train.seed=3"])
    expected = covft.build_model("tiny-test", vision_layers=1, text_encoder="random-tiny", seed=3)
    built = build_base(config)
    assert all(
        torch.equal(a, b)
        for a, b in zip(built.state_dict().values(), expected.state_dict().values(), strict=True)
    )
    config.base_options["seed"] = 1
    with pytest.raises(DownstreamConfigError, match="set train.seed instead"):
        build_base(config)


def write_downstream(root: Path) -> tuple[Path, Path]:
    (root / "images").mkdir(parents=True)
    records = []
    for name, colour in COLOURS.items():
        Image.new("RGB", (16, 16), colour).save(root / "images" / f"{name}.png")
        records.append(
            {
                "id": name,
                "image": f"images/{name}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the square?"},
                    {"from": "gpt", "value": name},
                ],
            }
        )
    (root / "train.json").write_text(json.dumps(records))
    (root / "test.json").write_text(json.dumps(records[:2]))
    return root / "train.json", root / "test.json"


def test_llava_items_from_held_out_split(tmp_path: Path) -> None:
    _, test = write_downstream(tmp_path)
    items = llava_items(test, str(tmp_path))
    assert [(i["id"], i["prompt"], i["answer"]) for i in items] == [
        ("red", "What colour is the square?", "red"),
        ("green", "What colour is the square?", "green"),
    ]
    assert items[0]["image"].load().getpixel((0, 0)) == COLOURS["red"]


def test_downstream_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    train, test = write_downstream(tmp_path / "data")
    base = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=0)
    covft.apply_vft(base, "freeze")
    base.save_pretrained(tmp_path / "base")
    image = ImageRef(image=Image.new("RGB", (16, 16), (200, 30, 30)))
    gqa = [
        {"id": f"g{i}", "image": image, "prompt": "What colour?\nAnswer the question using a single word or phrase.",
         "context": "What colour?", "answer": "red"}
        for i in range(2)
    ]  # fmt: skip
    write_suite(tmp_path / "suite", "gqa", gqa)
    config = {
        "base": str(tmp_path / "base"),
        "output_dir": str(tmp_path / "out"),
        "downstream": {"name": "colours", "train": str(train), "eval": str(test), "image_folder": str(tmp_path / "data")},
        "upstream": {"suite": str(tmp_path / "suite")},
        "strategies": ["lora", "covft"],
        "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_ratio": 0.0},
        "max_new_tokens": 2,
    }  # fmt: skip
    path = tmp_path / "downstream.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["downstream", str(path), "strategies=[lora,covft]", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "downstream.json").read_text())
    assert report["upstream"] == ["gqa"] and list(report["strategies"]) == ["lora", "covft"]
    for name, row in report["strategies"].items():
        assert row["train"]["steps"] == 2
        assert row["E"] == pytest.approx(row["A_D"] - report["base"]["A_D"])
        assert row["F"] == pytest.approx(row["A_u"]["gqa"] - report["base"]["A_u"]["gqa"])
        assert row["O"] == pytest.approx((row["E"] + row["F"]) / 2)
        assert f"{name}: E={row['E']:+.2f} F={row['F']:+.2f} O={row['O']:+.2f}" in printed
        assert (tmp_path / "out" / name / "upstream" / "results.md").is_file()
    table = (tmp_path / "out" / "downstream.md").read_text()
    assert "| base | – |" in table and "| covft | covft |" in table and "A_gqa" in table
    assert (tmp_path / "out" / "downstream.png").read_bytes()[:4] == b"\x89PNG"
    # the resolved config is saved next to the results and reads back to the same study
    saved = load_config(tmp_path / "out" / "downstream_config.yaml")
    assert saved == load_config(path, ["progress=false"])  # --no-progress is part of what ran

    # a rerun reuses the tuned models and every cached prediction
    calls: list[int] = []
    monkeypatch.setattr(CovftModel, "generate", lambda self, **kw: calls.append(1))
    assert main(["downstream", str(path), "--no-progress"]) == 0
    assert calls == []
    again = json.loads((tmp_path / "out" / "downstream.json").read_text())
    assert all(row["train"]["reused"] for row in again["strategies"].values())
    assert again["strategies"]["covft"]["E"] == report["strategies"]["covft"]["E"]

    # changed settings never silently reuse a finished tuning run
    capsys.readouterr()
    assert main(["downstream", str(path), "train.max_steps=3", "--no-progress"]) == 2
    assert "holds a finished tuning run with other settings (train differ)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.lr_sheduler=cosine", "unknown config key 'train.lr_sheduler' in downstream strategy 'lora'"),
        ("upstream.suite={root}/nonexistent", "nonexistent"),
        ("downstream.train={root}/missing.json", "downstream.train: "),
        ("downstream.eval={root}/missing.json", "missing.json"),
        ("strategies=5", "strategies: got 5, not a list"),
        ("strategies={{method: lora}}", "strategies: got {{'method': 'lora'}}, not a list"),
    ],
    ids=[
        "a typo in train",
        "no upstream suite",
        "no training file",
        "no held-out split",
        "an int",
        "a mapping",
    ],
)
def test_bad_inputs_stop_the_study_before_anything_is_written_or_evaluated(
    override: str, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from covft.recipes import downstream_study

    def never(*args, **kwargs):
        raise AssertionError("evaluated before the inputs were checked")

    monkeypatch.setattr(downstream_study, "evaluate", never)
    monkeypatch.setattr(downstream_study, "predict", never)
    train, test = write_downstream(tmp_path / "data")
    image = ImageRef(image=Image.new("RGB", (16, 16), (200, 30, 30)))
    write_suite(
        tmp_path / "suite", "gqa", [{"id": "g", "image": image, "prompt": "Colour?", "answer": "red"}]
    )
    out = tmp_path / "out"
    config = {
        "base": "tiny-test",
        "base_options": {"vision_layers": 1, "text_encoder": "random-tiny"},
        "output_dir": str(out),
        "downstream": {"train": str(train), "eval": str(test), "image_folder": str(tmp_path / "data")},
        "upstream": {"suite": str(tmp_path / "suite")},
        "strategies": ["lora", "full"],
        "train": {"max_steps": 1},
    }
    path = tmp_path / "downstream.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["downstream", str(path), override.format(root=tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("covft downstream: error: ") and named.format() in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_suite_mme_counts_on_0_to_100(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A_D and A_u scale MME by 2 x its subtasks: a 5-subtask MME answered right is 100, not 50."""
    from types import SimpleNamespace

    from covft.recipes import downstream_study

    records = [
        {"id": f"{c}-{a}", "category": f"task{c}", "image_id": str(c), "answer": a, "prediction": a}
        for c in range(5)
        for a in ("Yes", "No")
    ]
    config = SimpleNamespace(
        downstream=SimpleNamespace(benchmark="mme", eval="d", name="d"),
        upstream=SimpleNamespace(),
        eval_batch_size=1,
        max_new_tokens=2,
        progress=False,
    )
    assert downstream_accuracy(config, records) == pytest.approx(100.0)
    upstream = {"scores": {"mme": {"score": 1000.0}, "gqa": {"score": 40.0}}, "summary": {"mme_subtasks": 5}}
    monkeypatch.setattr(downstream_study, "asdict", lambda value: {})
    monkeypatch.setattr(downstream_study, "evaluate", lambda *args, **kwargs: upstream)
    monkeypatch.setattr(downstream_study, "predict", lambda *args, **kwargs: records)
    result = measure(None, config, records, {}, tmp_path, "base", "ckpt")
    assert result == {"A_D": pytest.approx(100.0), "A_u": {"mme": 100.0, "gqa": 40.0}}
