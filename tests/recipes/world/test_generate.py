"""The conflict world on disk: determinism, reuse, the training mix's structure, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covft.cli import main as covft_main
from covft.data.dataset import LlavaDataset
from covft.errors import UserError
from covft.recipes.world import FAMILIES, WorldConfig, allocate, generate, make_world
from covft.recipes.world.tasks import make_sample
from covft.utils.config import ConfigError

SIZE, SUITE = 80, 3


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    make_world(out, size=SIZE, seed=7, suite_size=SUITE, progress=False)
    return out


def test_same_seed_gives_byte_identical_files(world: Path, tmp_path: Path) -> None:
    make_world(tmp_path, size=SIZE, seed=7, suite_size=SUITE, progress=False)
    first, second = files_of(world), files_of(tmp_path)
    assert first.keys() == second.keys()
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_other_seed_gives_other_world(world: Path, tmp_path: Path) -> None:
    make_world(tmp_path, size=SIZE, seed=8, suite_size=SUITE, progress=False)
    assert (world / "train.json").read_bytes() != (tmp_path / "train.json").read_bytes()
    same_images = [
        name
        for name in ("images/train/000000.png", "suite/images/mme/mme-00000.png")
        if (world / name).read_bytes() == (tmp_path / name).read_bytes()
    ]
    assert same_images == []


def test_meta_records_config_counts_and_version(world: Path) -> None:
    meta = json.loads((world / "meta.json").read_text())
    assert meta["config"] == WorldConfig(size=SIZE, seed=7, suite_size=SUITE).to_dict()
    assert meta["version"] and meta["n_train"] == SIZE
    assert sum(meta["counts"].values()) == SIZE
    assert set(meta["counts"]) == set(FAMILIES) and min(meta["counts"].values()) >= 1
    assert len(meta["suite"]) == 12


def test_every_family_appears_and_records_are_llava_format(world: Path) -> None:
    records = json.loads((world / "train.json").read_text())
    annotations = [
        json.loads(line) for line in (world / "annotations" / "train.jsonl").read_text().splitlines()
    ]
    assert len(records) == SIZE
    assert {a["family"] for a in annotations} | {"text_only"} == set(FAMILIES)
    assert len({r["id"] for r in records}) == SIZE
    text_only = 0
    for record in records:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and turns
        assert all(t["value"].strip() for t in turns)
        if "image" in record:
            assert turns[0]["value"].startswith("<image>\n")
            assert sum(t["value"].count("<image>") for t in turns) == 1
            with Image.open(world / record["image"]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
        else:
            text_only += 1
            assert all("<image>" not in t["value"] for t in turns)
    assert text_only == json.loads((world / "meta.json").read_text())["counts"]["text_only"] >= 1
    multi = [r for r in records if len(r["conversations"]) >= 4]
    assert multi, "multi-turn conversations are missing"


def test_captions_cover_every_training_image(world: Path) -> None:
    records = json.loads((world / "train.json").read_text())
    captions = json.loads((world / "captions.json").read_text())
    assert [c["image"] for c in captions] == [r["image"] for r in records if "image" in r]
    for entry in captions:
        assert entry["caption"].endswith(".") and entry["conversations"][1]["value"] == entry["caption"]
        assert entry["conversations"][0]["value"].startswith("<image>")


def test_matching_meta_skips_regeneration_and_new_config_rebuilds(world: Path, tmp_path: Path) -> None:
    make_world(tmp_path, size=20, seed=1, suite_size=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json")}
    meta = make_world(tmp_path, size=20, seed=1, suite_size=1, progress=False)
    assert meta["n_train"] == 20
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json")} == before
    make_world(tmp_path, size=10, seed=1, suite_size=1, progress=False)
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) <= 10, "stale images were left behind"
    assert json.loads((tmp_path / "meta.json").read_text())["n_train"] == 10


def files_and_contents(directory: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }


@pytest.mark.parametrize(
    "own",
    [
        {"train.json": b'{"mine": 1}', "images/cat.png": b"png", "notes.txt": b"keep"},
        {"suite/q.jsonl": b"{}\n"},
        {"meta.json": b'{"my": "own meta"}', "captions.json": b"[]"},
        {"meta.json": b"not json"},
    ],
    ids=["train.json and images", "suite", "a meta.json of another tool", "a meta.json that is not json"],
)
def test_a_directory_that_is_not_a_world_is_refused_and_left_untouched(
    own: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mydata"
    for name, content in own.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    before = files_and_contents(out)
    with pytest.raises(UserError, match=r"mydata holds .* but is not a covft world.*--out.*delete"):
        make_world(out, size=5, seed=0, suite_size=1, progress=False)
    assert files_and_contents(out) == before
    code = covft_main(["world", "make", "--out", str(out), "--size", "5", "--suite-size", "1", "--quiet"])
    error = capsys.readouterr().err
    assert code == 1 and error.startswith(f"covft world: error: {out} holds ") and "Traceback" not in error
    assert files_and_contents(out) == before


def test_a_previous_or_interrupted_world_is_regenerated_and_other_files_kept(tmp_path: Path) -> None:
    make_world(tmp_path, size=6, seed=1, suite_size=1, progress=False)
    (tmp_path / "lm_corpus.json").write_text("corpus")  # not the world's: kept
    (tmp_path / "images" / "stale.png").write_bytes(b"old")
    make_world(tmp_path, size=5, seed=2, suite_size=1, progress=False)  # another meta.json
    assert json.loads((tmp_path / "meta.json").read_text())["config"]["seed"] == 2
    assert not (tmp_path / "images" / "stale.png").exists()
    assert (tmp_path / "lm_corpus.json").read_text() == "corpus"
    assert not (tmp_path / "meta.incomplete.json").exists()
    (tmp_path / "meta.json").unlink()  # as a run interrupted before writing meta.json leaves it
    (tmp_path / "meta.incomplete.json").write_text("{}")
    meta = make_world(tmp_path, size=5, seed=2, suite_size=1, progress=False)
    assert meta["n_train"] == 5 and (tmp_path / "meta.json").is_file()
    assert not (tmp_path / "meta.incomplete.json").exists()


def test_an_interrupted_world_is_marked_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "build_suite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_world(tmp_path, size=5, seed=0, suite_size=1, progress=False)
    assert (tmp_path / "train.json").is_file() and not (tmp_path / "meta.json").exists()
    monkeypatch.undo()
    assert make_world(tmp_path, size=5, seed=0, suite_size=1, progress=False)["n_train"] == 5


def test_allocation_is_proportional_and_keeps_every_family() -> None:
    weights = {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}
    families = allocate(100, weights)
    assert [families.count(f) for f in "abcd"] == [50, 30, 20, 0]
    small = allocate(3, {"a": 0.98, "b": 0.01, "c": 0.01})
    assert sorted(small) == ["a", "b", "c"]


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ConfigError, match="image_size must be at least 32 pixels, got 8. Fix: "):
        WorldConfig(image_size=8)
    with pytest.raises(ValueError, match="unknown families"):
        WorldConfig(family_weights={"poetry": 1.0})


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["make", "--size", "-5"], "size and suite_size must be >= 0, got -5"),
        (["make", "--suite-size", "-1"], "size and suite_size must be >= 0"),
        (["make", "--image-size", "0"], "image_size must be at least 32 pixels, got 0"),
        (["preview", "--image-size", "0"], "image_size must be at least 32 pixels, got 0"),
        (["preview", "--per-family", "0"], "--per-family must be at least 1, got 0"),
    ],
    ids=[
        "negative size",
        "negative suite size",
        "zero image size",
        "preview image size",
        "preview per family",
    ],
)
def test_cli_refuses_impossible_sizes_in_one_line_writing_nothing(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w"
    assert covft_main(["world", argv[0], "--out", str(out), *argv[1:], "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"covft world: error: {named}") and "Traceback" not in error
    assert not out.exists()


def test_larger_images_scale_the_world() -> None:
    sample = make_sample("grounding", np.random.default_rng(3), image_size=128)
    assert sample.rendering is not None and sample.rendering.image.size == (128, 128)


def test_cli_make_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w"
    code = covft_main(
        [
            "world",
            "make",
            "--out",
            str(out),
            "--size",
            "15",
            "--seed",
            "2",
            "--suite-size",
            "1",
            "--image-size",
            "48",
            "--quiet",
        ]
    )
    assert code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["image_size"] == 48 and meta["n_train"] == 15
    assert json.loads(capsys.readouterr().out)["n_train"] == 15
    assert covft_main(["world", "preview", "--out", str(tmp_path / "sheet.png"), "--per-family", "1"]) == 0
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.height >= len(FAMILIES) * 150


def test_training_files_load_with_the_llava_dataset(world: Path) -> None:
    train = LlavaDataset(world / "train.json", image_folder=world)
    captions = LlavaDataset(world / "captions.json", image_folder=world)
    assert len(train.records) == SIZE and train.skipped.total == 0
    assert len(captions.records) == json.loads((world / "meta.json").read_text())["n_images"]
    first = next(train[i] for i in range(SIZE) if train[i]["image"] is not None)
    assert first["image"].size == (64, 64)
