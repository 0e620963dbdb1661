"""The package's promises: a light import, a working command line, a documented option set."""

from __future__ import annotations

import subprocess
import sys

import covft
from covft.cli import COMMANDS, main


def test_import_is_light():
    code = (
        "import sys, covft; heavy = [m for m in ('deepspeed', 'wandb', 'lmms_eval', 'sklearn', 'matplotlib') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert name in text


def test_cli_rejects_unknown_command(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_methods_command_prints_options_with_paper_defaults(capsys):
    assert main(["methods", "covft"]) == 0
    text = capsys.readouterr().out
    assert "num_experts = 4" in text and "routing = 'dense'" in text and "context = 'cve'" in text


def test_every_command_module_imports_and_has_the_contract():
    import importlib

    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name


def test_public_api():
    for name in ("build_model", "apply_vft", "available_methods", "load_pretrained", "score"):
        assert callable(getattr(covft, name))
