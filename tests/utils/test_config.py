"""The one configuration loader: typed schemas, YAML, overrides, closest-key errors, round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from covft.utils.config import ConfigError, from_dict, load, override, save, valid_keys


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
