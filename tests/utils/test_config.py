"""The one configuration loader: typed schemas, YAML, overrides, closest-key errors, round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from covft.utils.config import ConfigError, from_dict, load, load_yaml, override, save, valid_keys


@dataclass(frozen=True)
class Inner:
    steps: int = 3
    width: int | None = None


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    lr: float = 1e-3
    name: str | None = None
    mode: Literal["a", "b"] = "a"
    flag: bool = True
    benchmarks: str | list[str] = "all"
    weights: dict[str, float] = field(default_factory=lambda: {"x": 1.0, "y": 2.0})


def test_valid_keys_expand_groups_and_mark_free_form_mappings() -> None:
    assert valid_keys(Outer) == [
        "inner.steps", "inner.width", "lr", "name", "mode", "flag", "benchmarks", "weights.*"
    ]  # fmt: skip


def test_override_of_a_frozen_instance_changes_only_the_named_fields() -> None:
    base = Outer(weights={"x": 1.0, "y": 2.0})
    changed = override(
        base,
        ["inner.width=none", "lr=1e-4", "benchmarks=[gqa,mme]", "weights.x=3", "flag=0", "name=none"],
    )
    assert changed.inner == Inner(steps=3, width=None) and changed.lr == 1e-4
    assert changed.benchmarks == ["gqa", "mme"] and changed.weights == {"x": 3.0, "y": 2.0}
    assert changed.flag is False and changed.name == "none"  # a string field keeps the text none
    assert isinstance(changed.weights["x"], float) and base.weights == {"x": 1.0, "y": 2.0}
    assert override(base, ["weights={}"]).weights == {}  # a key set whole is replaced, not merged
    untouched = override(base, ["lr=0.5"])
    assert untouched.inner is base.inner and untouched.weights is base.weights


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "inner.step=1",
            r"unknown config key 'inner.step' in override 'inner.step=1'\. Did you mean "
            r"'inner.steps'\? Valid keys: inner.steps, inner.width$",
        ),
        ("lr.x=1", r"unknown config key 'lr.x'.*Did you mean 'lr'"),
        ("inner=4", r"cannot override 'inner' with 4: it is a group of settings.*inner.steps="),
        ("mode=c", r"mode must be one of \['a', 'b'\], got 'c'"),
        ("inner.steps=two", r"inner.steps must be an integer, got 'two'"),
        ("weights.x=heavy", r"weights.x must be a number"),
        ("flag=maybe", r"flag must be true or false"),
        ("lr", r"is not key=value"),
        ("=3", r"has an empty key"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        override(Outer(), [text])


def test_yaml_file_overrides_and_saved_config_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-5\ninner:\n  steps: 7\nweights: {z: 1}\n")
    config = load(Outer, path, ["inner.width=5", "weights.x=0.5"])
    assert config == Outer(inner=Inner(7, 5), lr=2e-5, weights={"z": 1.0, "x": 0.5})
    save(config, tmp_path / "saved.yaml")
    assert load(Outer, tmp_path / "saved.yaml") == config
    path.write_text("inner:\n  stpes: 1\n")
    with pytest.raises(ConfigError, match=r"'inner.stpes' in .*c\.yaml\. Did you mean 'inner.steps'"):
        load(Outer, path)
    with pytest.raises(ConfigError, match=r"inner.steps must be an integer, got True"):
        from_dict(Outer, {"inner": {"steps": True}})


@dataclass(frozen=True)
class Paths:
    output_dir: str = "runs/x"
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    steps: int = 1
    lr: float = 0.1
    stage: Literal[1, 2] = 2
    options: dict = field(default_factory=dict)


def test_a_string_field_keeps_the_number_as_written(tmp_path: Path) -> None:
    """YAML 1.1 reads 010 as octal 8, 1.10 as 1.1 and 1_000 as 1000; a string field wants the text."""
    overrides = ["output_dir=010", "name=1.10", "tags=[0755, 1_000, 2.50]", "steps=010", "lr=1.10"]
    expected = Paths("010", "1.10", ["0755", "1_000", "2.50"], 8, 1.1)
    assert load(Paths, None, overrides) == expected
    assert override(Paths(), overrides) == expected
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: 010\nname: 1.10\ntags: [0755, 1_000, 2.50]\nsteps: 010\nlr: 1.10\n")
    config = load(Paths, path)
    assert config == expected
    assert config.output_dir == "010"
    assert [type(v) for v in (config.steps, config.lr)] == [int, float]  # numbers stay plain numbers
    config = load(Paths, None, ["stage=1", "options={a: 010, 1: [2.5]}", "name=null"])
    assert (config.stage, config.options, config.name) == (1, {"a": 8, 1: [2.5]}, None)
    assert (
        type(config.stage) is int and type(config.options["a"]) is int and type(config.options[1][0]) is float
    )
    save(config, tmp_path / "saved.yaml")  # plain values: safe_dump writes them
    assert load(Paths, tmp_path / "saved.yaml") == config
    assert yaml.safe_dump(load_yaml(path))  # the raw mapping stays writable too


def test_a_key_given_twice_in_a_yaml_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("output_dir: a\ninner:\n  steps: 1\nsteps: 2\nsteps: 3\n")
    with pytest.raises(
        ConfigError, match=r"dup\.yaml gives key 'steps' twice in one mapping \(lines 4 and 5\)"
    ):
        load_yaml(path)
    path.write_text("inner:\n  steps: 1\n  width: 2\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml gives key 'steps' twice .*lines 2 and 4"):
        load(Outer, path)
    with pytest.raises(ConfigError, match=r"override 'weights=\{x: 1, x: 2\}' gives key 'x' twice"):
        load(Outer, None, ["weights={x: 1, x: 2}"])
    path.write_text("base: &b {steps: 1, width: 2}\ninner:\n  <<: *b\n  steps: 5\n")
    assert load_yaml(path)["inner"] == {"steps": 5, "width": 2}  # a merged key may be overridden


def test_a_yaml_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load(Outer, path)
