"""CoVFT's stage-2 step at the demo's geometry, before and after its two cost fixes, beside full's.

Side by side in one run, on the same world batches, round-robin so that machine load hits every
configuration alike; time per optimizer step (forward + backward + AdamW) in thread CPU seconds
(median over the timed steps), and its ratio to full fine-tuning's:

- ``full``: full fine-tuning (the reference);
- ``covft, encoder per step, MHA``: CoVFT as the demo ran it before: the frozen MiniLM encodes
  the instructions of every batch (each one new, as in a first epoch: the demo's cache only
  helps from the second epoch) and the CVE runs ``nn.MultiheadAttention`` over keys and values
  materialised as ``[visual ; text repeated over tokens]``;
- ``covft, vectors computed once, MHA``: the instruction vectors come from a file computed once
  per dataset (``FrozenTextEncoder.precompute``, what ``covft demo`` now does);
- ``covft, vectors computed once``: and the CVE's attention computed without the repeated text
  half (``ContextVectorExtractor._attend``: exactly the same function), covft as it is now.

The analytic FLOP ratio to full (``covft.profile.analytic``, text encoder excluded) is printed
beside, the floor the time ratio can reach.

    PYTHONPATH=src python benchmarks/bench_covft_demo_step.py            # the demo geometry, batch 16
    PYTHONPATH=src python benchmarks/bench_covft_demo_step.py --steps 8 --warmup 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

CONFIGS = (
    "full",
    "covft, encoder per step, MHA",
    "covft, vectors computed once, MHA",
    "covft, vectors computed once",
)


@contextlib.contextmanager
def materialised_attention() -> Iterator[None]:
    """The CVE's attention as ``nn.MultiheadAttention`` over ``[visual ; text repeated]`` (method.md 2.2)."""
    from covft.nn.cve import ContextVectorExtractor

    def attend(self: ContextVectorExtractor, visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = visual.shape
        key_value = torch.cat([visual, text.unsqueeze(1).expand(batch, tokens, self.text_dim)], dim=-1)
        return self.attn(text.unsqueeze(1), key_value, key_value, need_weights=False)[0].squeeze(1)

    original = ContextVectorExtractor._attend
    ContextVectorExtractor._attend = attend
    try:
        yield
    finally:
        ContextVectorExtractor._attend = original


def _world(folder: Path, size: int, image_size: int) -> tuple[list[dict[str, Any]], Path]:
    import json

    from covft.recipes.demo.tokenizer import world_tokenizer
    from covft.recipes.world import make_world

    make_world(folder, size=size, seed=0, suite_size=2, image_size=image_size, progress=False)
    records = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    tokenizer = world_tokenizer(folder, folder / "cache", 1024)
    return [r for r in records if r.get("image")], tokenizer


def _batches(records: list[dict[str, Any]], folder: Path, batch: int, count: int) -> list[list[dict]]:
    from PIL import Image

    samples = []
    for record in records[: batch * count]:
        with Image.open(folder / record["image"]) as image:
            samples.append({**record, "image": image.convert("RGB")})
    return [samples[i * batch : (i + 1) * batch] for i in range(count)]


def run_benchmark(
    *,
    batch: int = 16,
    steps: int = 6,
    warmup: int = 2,
    world_size: int = 600,
    image_size: int = 64,
    llm_hidden: int = 128,
    llm_layers: int = 3,
    vision_hidden: int | None = None,
    vision_layers: int | None = None,
    text_encoder: str = "minilm",
) -> dict[str, Any]:
    """Time every configuration of :data:`CONFIGS`; returns medians, ratios and FLOP ratios."""
    import covft
    from covft.data.templates import context_text
    from covft.models.text_encoder import load_text_encoder
    from covft.profile import analytic_flops, geometry_of

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        records, tokenizer = _world(folder, world_size, image_size)
        batches = _batches(records, folder, batch, warmup + steps)
        options = dict(
            tokenizer_dir=str(tokenizer),
            text_encoder=text_encoder,
            llm_hidden=llm_hidden,
            llm_layers=llm_layers,
            vision_hidden=vision_hidden,
            vision_layers=vision_layers,
            image_size=image_size,
        )
        models = {}
        for name in ("full", "covft"):
            model = covft.apply_vft(covft.build_model("tiny", seed=0, **options), name)
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
            models[name] = (model, optimizer)
        covft_model = models["covft"][0]
        computed_once = covft_model.text_encoder
        computed_once.precompute(context_text(s["conversations"]) for b in batches for s in b)
        per_step = load_text_encoder(text_encoder)
        per_step.cache_size = 0  # every instruction is encoded when its batch runs
        collated = {name: [model.collate(b) for b in batches] for name, (model, _) in models.items()}
        llm_tokens = int(collated["covft"][0]["input_ids"].shape[1])
        context_tokens = int(collated["covft"][0]["context_input_ids"].shape[1])
        flops = {
            name: analytic_flops(
                geometry_of(model, llm_tokens=llm_tokens, prompt_tokens=1, context_tokens=0, batch=batch),
                name,
            )["total"]
            for name, (model, _) in models.items()
        }

        def step(config: str, index: int) -> float:
            name = "full" if config == "full" else "covft"
            model, optimizer = models[name]
            if name == "covft":
                model.text_encoder = per_step if "per step" in config else computed_once
            attention = materialised_attention() if config.endswith("MHA") else contextlib.nullcontext()
            started = time.thread_time()
            with attention:
                model(**collated[name][index]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.thread_time() - started

        times: dict[str, list[float]] = {config: [] for config in CONFIGS}
        for index in range(warmup + steps):
            for config in CONFIGS:
                elapsed = step(config, index)
                if index >= warmup:
                    times[config].append(elapsed)
    medians = {config: statistics.median(values) for config, values in times.items()}
    return {
        "times": times,
        "median_s": medians,
        "ratio_to_full": {config: medians[config] / medians["full"] for config in CONFIGS},
        "flop_ratio": flops["covft"] / flops["full"],
        "batch": batch,
        "context_tokens": context_tokens,
        "threads": torch.get_num_threads(),
    }


def format_results(results: dict[str, Any]) -> str:
    lines = [
        f"CoVFT stage-2 step at the demo geometry, batch {results['batch']}, {results['threads']} thread(s), "
        "thread CPU seconds (median)",
        f"{'configuration':<36} {'step':>9} {'/ full':>8}",
    ]
    for config, seconds in results["median_s"].items():
        lines.append(f"{config:<36} {seconds:>8.3f}s {results['ratio_to_full'][config]:>8.3f}")
    lines.append(f"analytic FLOP ratio covft / full (text encoder excluded): {results['flop_ratio']:.3f}")
    before, after = (results["median_s"][c] for c in (CONFIGS[1], CONFIGS[3]))
    lines.append(f"covft step, before / after: {before / after:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(format_results(run_benchmark(batch=args.batch, steps=args.steps, warmup=args.warmup)))


if __name__ == "__main__":
    main()
