"""Shared plumbing: the analysis training config and task-family labels."""

from __future__ import annotations

import json

from covft.analysis.runs import family_labels, load_records
from covft.recipes.analyses.runs import analysis_config


def test_analysis_config_fixes_what_a_controlled_comparison_needs(tmp_path) -> None:
    overrides = [
        "method=covft",
        "method_options.num_experts=2",
        "train.lr=3e-4",
        "data.group_by_modality_length=true",
    ]
    common = dict(config=None, overrides=overrides, train_file="d.json", image_folder=tmp_path, steps=7)
    ours = analysis_config(method="covft", output_dir=tmp_path / "a", batch_size=3, seed=5, **common)
    full = analysis_config(method="full", output_dir=tmp_path / "b", **common)
    assert (
        ours.method_options == {"num_experts": 2} and full.method_options == {}
    )  # options of the recipe's method only
    for cfg in (ours, full):
        assert cfg.stage == 2 and cfg.train.max_steps == 7 and cfg.train.save_steps == 0
        assert cfg.train.report_to == "none" and not cfg.data.group_by_modality_length
        assert cfg.train.lr == 3e-4 and cfg.data.train == "d.json"
    assert (ours.train.batch_size, ours.train.seed) == (3, 5)


def test_family_labels_prefer_world_annotations(world, tmp_path) -> None:
    records = load_records(world / "train.json")
    labels = family_labels(world / "train.json", records)
    annotated = [
        json.loads(line) for line in (world / "annotations" / "train.jsonl").read_text().splitlines()
    ]
    assert all(labels[a["id"]] == a["family"] for a in annotated)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(records))
    guessed = family_labels(plain, records)  # no annotations next to it: question patterns
    grounding = [a["id"] for a in annotated if a["family"] == "grounding"]
    assert grounding and all(guessed[i] == "grounding" for i in grounding)
    assert set(guessed.values()) <= {"grounding", "region", "caption", "other"}
    # the world's caption files reuse train.json's ids for other questions: the annotations
    # describe train.json only, so a caption file's samples are labelled by their own questions
    captions = load_records(world / "dense_captions.json")
    assert {r["id"] for r in captions} & set(labels)
    assert set(family_labels(world / "dense_captions.json", captions).values()) == {"caption"}
