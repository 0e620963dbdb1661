"""Run by tests/export/test_with_covft.py as a script: covft exports loaded through transformers'
Auto classes (``trust_remote_code=True``) in a fresh process, as a user would.

``python covft_load.py CASES.json``: for each case, load ``out`` with
``AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True)`` and save the class,
the logits of the saved ``batch`` and the greedy answer to the saved prompt to ``result``. Nothing
of covft is imported before transformers loads the export: transformers' remote-code loader does it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText


def main(cases_file: str) -> None:
    for case in json.loads(Path(cases_file).read_text()):
        model = AutoModelForImageTextToText.from_pretrained(case["out"], trust_remote_code=True)
        model.eval()
        with torch.no_grad():
            logits = model(**torch.load(case["batch"])).logits
        generated = model.generate(**torch.load(case["prompt"]), max_new_tokens=case["max_new_tokens"])
        strategy = model.strategy.name if model.strategy else None
        torch.save(
            {"class": type(model).__name__, "strategy": strategy, "logits": logits, "generated": generated},
            case["result"],
        )


if __name__ == "__main__":
    main(sys.argv[1])
