"""Run by the export tests as a script: exported directories loaded with transformers alone.

``python stock_load.py CASES.json``: for each case, load ``out`` with
``AutoModelForImageTextToText`` and ``AutoProcessor``, compute the logits of the saved ``batch`` and
the processor's inputs for ``prompt`` + ``image`` and the greedy answer to them, and save them with transformers' loading report
(missing, unexpected, mismatched weights) to ``result``. Importing covft is
made impossible before anything else runs, so a directory that needs covft fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.modules["covft"] = None  # type: ignore[assignment]  # `import covft` now raises ImportError

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402


def load_and_run(case: dict) -> dict:
    model, loading = AutoModelForImageTextToText.from_pretrained(case["out"], output_loading_info=True)
    model.eval()
    with torch.no_grad():
        logits = model(**torch.load(case["batch"])).logits
    if case.get("prompt_inputs"):  # no processor without torchvision: covft's own prompt inputs
        inputs = torch.load(case["prompt_inputs"])
    else:
        processor = AutoProcessor.from_pretrained(case["out"])
        inputs = processor(images=Image.open(case["image"]), text=case["prompt"], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=case["max_new_tokens"], do_sample=False)
    return {
        "class": type(model).__name__,
        "loading": {key: sorted(map(str, names)) for key, names in loading.items()},
        "logits": logits,
        "input_ids": inputs["input_ids"],
        "pixel_values": inputs["pixel_values"],
        "generated": generated,
    }


def main(cases_file: str) -> None:
    for case in json.loads(Path(cases_file).read_text()):
        torch.save(load_and_run(case), case["result"])
    imported = sorted(name for name, module in sys.modules.items() if name.startswith("covft") and module)
    assert not imported, f"covft was imported: {imported}"


if __name__ == "__main__":
    main(sys.argv[1])
