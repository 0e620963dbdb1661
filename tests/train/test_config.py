"""The config schema: shipped YAML recipes, overrides, closest-key errors, round trips."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

import covft
from covft.train.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
    packaged_config_names,
    save_config,
    valid_keys,
)
from covft.train.setup import check_method_options, strategy_for

CONFIG_ROOT = Path(str(resources.files("covft") / "configs"))


def test_every_shipped_recipe_parses_and_validates() -> None:
    names = packaged_config_names()
    assert {"stage1", "stage2_covft"} <= set(names)
    # one stage-2 recipe per strategy, all configuration-aligned with covft's
    assert {f"stage2_{m}" for m in covft.available_methods()} <= set(names)
    reference = load_config("stage2_covft")
    for name in names:
        config = load_config(name)
        assert isinstance(config, TrainConfig), name
        check_method_options(*strategy_for(config))  # method_options fit the strategy's options
        raw = yaml.safe_load((CONFIG_ROOT / f"{name}.yaml").read_text())
        assert set(raw) <= {k.split(".")[0] for k in valid_keys()}, name
        if name.startswith("stage2_"):
            assert config.stage == 2 and config.method == name.removeprefix("stage2_")
            assert config.train == reference.train, f"{name} differs from stage2_covft in its schedule"
            assert config.data.train == reference.data.train


def test_paper_recipe_values() -> None:
    stage1 = load_config("stage1")
    assert stage1.stage == 1 and stage1.method == "freeze" and stage1.method_options == {"train_llm": False}
    assert stage1.train.lr == pytest.approx(1e-3) and stage1.data.template == "plain"
    stage2 = load_config("stage2_covft")
    assert stage2.train.lr == pytest.approx(2e-5)
    assert stage2.train.lr_vision is stage2.train.lr_projector is stage2.train.lr_llm is None
    assert stage2.train.lr_scheduler == "cosine" and stage2.train.warmup_ratio == pytest.approx(0.03)
    assert stage2.train.weight_decay == 0.0 and stage2.train.precision == "bf16"
    assert stage2.train.gradient_checkpointing and stage2.data.group_by_modality_length
    assert stage2.init_from == stage1.output_dir


def test_deepspeed_and_accelerate_configs_are_well_formed() -> None:
    zero2 = json.loads((CONFIG_ROOT / "deepspeed" / "zero2.json").read_text())
    zero3 = json.loads((CONFIG_ROOT / "deepspeed" / "zero3.json").read_text())
    assert zero2["zero_optimization"]["stage"] == 2
    assert zero3["zero_optimization"]["stage"] == 3
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    for ds in (zero2, zero3):  # the trainer fills these from the covft config
        assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_accumulation_steps"] == "auto"
        assert "optimizer" not in ds and "scheduler" not in ds
    accelerate_dir = CONFIG_ROOT / "accelerate"
    kinds = {}
    for file in accelerate_dir.glob("*.yaml"):
        raw = yaml.safe_load(file.read_text())
        kinds[file.stem] = raw["distributed_type"]
        ds_file = raw.get("deepspeed_config", {}).get("deepspeed_config_file")
        if ds_file:
            assert (Path(__file__).resolve().parents[2] / ds_file).is_file(), (
                f"{file.name} points at {ds_file}"
            )
    assert kinds["deepspeed_zero2"] == kinds["deepspeed_zero3"] == "DEEPSPEED"
    assert kinds["fsdp"] == "FSDP" and kinds["ddp"] == "MULTI_GPU"
    fsdp = yaml.safe_load((accelerate_dir / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_use_orig_params"] is True  # frozen and trainable parameters share blocks


def test_overrides_set_nested_and_free_form_keys() -> None:
    config = load_config(
        "stage2_covft",
        [
            "train.lr=1e-4",  # YAML 1.1 reads this as a string; the schema makes it a float
            "train.batch_size=3",
            "model_options.vision_layers=2",
            "method_options.num_experts=8",
            "resume=true",
            "init_from=null",
            "data.on_bad_sample=skip",
        ],
    )
    assert config.train.lr == pytest.approx(1e-4) and config.train.batch_size == 3
    assert config.model_options == {"vision_layers": 2}
    assert config.method_options["num_experts"] == 8 and config.method_options["routing"] == "dense"
    assert config.resume is True and config.init_from is None and config.data.on_bad_sample == "skip"
    emptied = load_config("stage2_covft", ["method=freeze", "method_options={}"])
    assert emptied.method_options == {}  # how the error for a stale option says to drop them


@pytest.mark.parametrize(
    ("override", "closest"),
    [
        ("train.lr_sheduler=linear", "train.lr_scheduler"),
        ("trian.lr=1", "train.lr"),
        ("data.image_fodler=x", "data.image_folder"),
        ("ouput_dir=x", "output_dir"),
        ("train.batchsize=2", "train.batch_size"),
    ],
)
def test_unknown_key_names_the_closest_valid_key(override: str, closest: str) -> None:
    with pytest.raises(ConfigError, match=rf"Did you mean '{closest}'\?"):
        load_config("stage2_covft", [override])


def test_unknown_key_in_a_yaml_file_names_file_and_closest_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: tiny-test\ntrain:\n  gradient_acum: 4\n")
    with pytest.raises(
        ConfigError, match=r"train\.gradient_acum.*bad\.yaml.*Did you mean 'train\.grad_accum'"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=two", "train.batch_size must be an integer"),
        ("train.precision=fp8", "train.precision must be one of"),
        ("stage=3", "stage must be one of"),
        ("resume=maybe", "resume must be true or false"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("train.warmup_ratio=1.5", "warmup_ratio"),
        ("train.lr", "is not key=value"),
    ],
)
def test_invalid_values_are_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("stage2_covft", [override])


def test_stage1_with_a_vision_strategy_is_an_error() -> None:
    with pytest.raises(ConfigError, match="stage 1 trains the projector only"):
        load_config("stage1", ["method=covft"])


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: tiny-test\ntrain:\n  lr: [1e-3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml \(line \d+"):
        load_config(path)


def test_missing_config_file_lists_shipped_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stage2_covft"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config("stage2_lora", ["train.lr_vision=3e-5", "model_options.vision_layers=2"])
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert config_from_dict(config.to_dict()) == config


def test_unknown_method_or_method_option_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'covft'"):
        check_method_options("cofvt", {})
    with pytest.raises(ConfigError, match=r"Did you mean 'method_options.num_experts'"):
        check_method_options("covft", {"num_expert": 4})
    with pytest.raises(ConfigError, match="not an option of method 'full'.*method_options=\\{\\}"):
        check_method_options("full", {"num_experts": 4})
    check_method_options("lora", {"r": 8, "train_llm": True})


def test_a_missing_tracker_package_fails_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate.tracking
    from accelerate.utils import LoggerType

    from covft.train.logging import require_trackers

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [LoggerType.TENSORBOARD])
    with pytest.raises(ImportError, match=r"report_to=wandb needs the 'wandb' package.*report_to=none"):
        require_trackers("tensorboard,wandb")
    with pytest.raises(ImportError, match=r"pip install 'mlflow'"):
        require_trackers("mlflow")
    require_trackers("none")
    require_trackers("tensorboard")


def test_an_unknown_tracker_is_named_with_the_closest_one() -> None:
    from covft.train.logging import require_trackers, tracker_names

    with pytest.raises(ConfigError, match=r"unknown tracker 'tensorbord'. Did you mean 'tensorboard'"):
        require_trackers("tensorbord")
    assert tracker_names("none") == [] and tracker_names(" tensorboard, wandb ") == ["tensorboard", "wandb"]


def test_report_to_auto_uses_the_installed_local_trackers(monkeypatch):
    import accelerate.tracking

    from covft.train.logging import tracker_names

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard", "wandb"])
    assert tracker_names("auto") == ["tensorboard"]  # wandb needs an account: only when named
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    assert tracker_names("auto") == []  # a base install trains with log.jsonl only
    assert tracker_names("none") == [] and tracker_names("wandb, tensorboard") == ["wandb", "tensorboard"]
    assert TrainConfig().train.report_to == "auto"


def test_data_mixture_keys_parse_and_are_checked() -> None:
    config = load_config(
        "stage2_covft", ["data.train=[a.json, b.jsonl]", "data.weights=[2, 0.5]", "data.fraction=0.125"]
    )
    assert (config.data.train, config.data.weights, config.data.fraction) == (
        ["a.json", "b.jsonl"],
        [2.0, 0.5],
        0.125,
    )
    assert config.data.fraction_seed == 0
    assert load_config("stage2_covft", ["data.train=a.json"]).data.train == "a.json"
    bad = {
        "data.fraction=0": r"data: fraction must be in \(0, 1\], got 0",
        "data.fraction=1.5": r"fraction must be in \(0, 1\], got 1.5",
        "data.weights=[1]": r"1 weight\(s\) for 2 file\(s\)",
        "data.weights=[1, 0]": r"weights are repeat factors and must be > 0, got \[1.0, 0.0\]",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config("stage2_covft", ["data.train=[a.json, b.jsonl]", override])
