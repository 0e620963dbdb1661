"""Cost of visual fine-tuning strategies, side by side: the layout of the paper's supp. Table E.

For each strategy, on the same base weights and the same synthetic batch:

- **train step**: forward + backward + ``AdamW.step`` over the trainable parameters (median of
  the timed steps after warm-up);
- **inference / sample**: batch 1, one forward of an image + question prompt that produces the
  first answer token's logits (the prefill of ``generate``, ``logits_to_keep=1``), text encoder
  included for context-aware strategies;
- **peak memory**: on CUDA the allocator's peak over the training steps (stats reset between
  strategies, models freed); on CPU the peak resident set of a fresh process per strategy
  (forked from a pre-imported server, so imports are not re-done), minus that process's
  resident set before the model was built;
- **FLOPs** of one training step and one prefill (``FlopCounterMode``), see :mod:`.flops`;
- ratios of every figure to full fine-tuning.

On CPU the timed steps of the strategies are interleaved (round-robin) so that load from other
processes affects them alike; every figure keeps its spread (min/median/max).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from covft.models import build_model
from covft.profile.flops import ANALYTIC_METHODS, analytic_flops, count_flops, geometry_of
from covft.strategies import apply_vft, get_strategy
from covft.strategies.base import make_options

__all__ = [
    "GEOMETRIES",
    "ProfileSettings",
    "build_for_profile",
    "count_only",
    "format_flops_markdown",
    "format_markdown",
    "profile",
    "static_training_bytes",
    "synthetic_batch",
]

GEOMETRIES = ("tiny", "llava-1.5-7b")
TINY_DEFAULTS: dict[str, Any] = dict(
    vision_layers=6, vision_hidden=64, image_size=64, patch_size=8, llm_hidden=128, llm_layers=2
)
"""The ``tiny`` geometry: the tiny-test preset with 6 vision blocks (65 tokens, width 64)."""


@dataclass
class ProfileSettings:
    """What to measure and at which geometry. ``device``/``dtype`` ``None`` mean the geometry's
    default: CPU float32 for ``tiny``, CUDA bfloat16 for ``llava-1.5-7b``."""

    geometry: str = "tiny"
    methods: tuple[str, ...] = ("freeze", "full", "covft")
    steps: int = 5
    warmup: int = 2
    inference_repeats: int | None = None
    batch_size: int | None = None
    text_tokens: int = 60
    prompt_tokens: int = 45
    context_tokens: int = 24
    llm_layers: int | None = None
    vision_layers: int | None = None
    train_llm: bool = True
    gradient_checkpointing: bool = False
    device: str | None = None
    dtype: str | None = None
    seed: int = 0
    lr: float = 2e-5
    count_flops: bool = True
    memory: bool = True
    threads: int | None = None
    clock: str = "wall"
    """wall (perf_counter) or thread (CPU time of this thread: with threads=1 on a CPU, immune to
    other processes' load; it misses time spent waiting, which a 1-thread CPU run does not have)."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolved(self) -> ProfileSettings:
        """A copy with the geometry's defaults filled in, validated."""
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={self.steps}, warmup={self.warmup}")
        if "full" not in self.methods:
            raise ValueError("ratios are taken against full fine-tuning: include 'full' in methods")
        if self.clock not in ("wall", "thread"):
            raise ValueError(f"clock must be wall or thread, got {self.clock!r}")
        if self.clock == "thread" and (self.threads != 1 or (self.device or "cpu") != "cpu"):
            raise ValueError("clock='thread' measures one CPU thread: use it with threads=1 on the CPU")
        big = self.geometry == "llava-1.5-7b"
        settings = ProfileSettings(**asdict(self))
        settings.methods = tuple(self.methods)
        settings.device = self.device or ("cuda" if big else "cpu")
        settings.dtype = self.dtype or ("bfloat16" if settings.device == "cuda" else "float32")
        settings.batch_size = self.batch_size or (1 if big else 4)
        settings.inference_repeats = self.inference_repeats or max(self.steps, 3)
        if settings.llm_layers is None:
            settings.llm_layers = 32 if big else TINY_DEFAULTS["llm_layers"]
        if settings.vision_layers is not None and big:
            raise ValueError("vision_layers applies to the tiny geometry only (the 7B tower has 24 blocks)")
        return settings


# ------------------------------------------------------------------------------------- building
@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _needs_text(method: str, options: dict[str, Any]) -> bool:
    cls = get_strategy(method)
    return bool(cls(make_options(cls, options)).needs_text)


def _random_bert_base(device: torch.device):
    """bert-base-uncased's geometry (d=768, 12 layers) with random weights: no download, same cost."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from covft.models.text_encoder import FrozenTextEncoder, minilm_path

    with torch.device(device):
        model = BertModel(BertConfig(), add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # the same uncased WordPiece vocabulary
    return FrozenTextEncoder(model, tokenizer, "bert-base-uncased (random weights)")


def build_for_profile(settings: ProfileSettings, method: str):
    """The geometry's model with ``method`` applied, on the settings' device and dtype.

    Every strategy starts from the same seed, so from the same base weights. The 7B model is
    allocated directly in the target dtype on the target device (no float32 copy).
    """
    options = {"train_llm": settings.train_llm, **settings.options.get(method, {})}
    device = torch.device(settings.device)
    dtype = getattr(torch, settings.dtype)
    with _default_dtype(dtype):
        if settings.geometry == "tiny":
            kwargs = {**TINY_DEFAULTS, "llm_layers": settings.llm_layers}
            if settings.vision_layers is not None:
                kwargs["vision_layers"] = settings.vision_layers
            model = build_model("tiny-test", seed=settings.seed, text_encoder="random-tiny", **kwargs)
            model.to(device=device, dtype=dtype)
        else:
            model = build_model(
                "llava-1.5-7b",
                device=str(device),
                dtype=dtype,
                seed=settings.seed,
                llm_layers=settings.llm_layers,
            )
            if _needs_text(method, options):
                model.text_encoder = _random_bert_base(device)
        apply_vft(model, method, **options)
    if model.text_encoder is not None:
        model.text_encoder.to(device=device, dtype=dtype)
        # measure the uncached cost: every instruction encoded (the worst case, no repeated questions)
        model.text_encoder.cache_size = 0
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def synthetic_batch(
    model, *, batch_size: int, text_tokens: int, context_tokens: int, seed: int, train: bool = True
) -> dict[str, torch.Tensor]:
    """A batch shaped like a LLaVA instruction sample: ``[bos, image tokens, text]`` per row.

    ``text_tokens`` text positions follow the image; in training the last third of them are the
    answer (labels), the rest are masked. The instruction for the text encoder is
    ``context_tokens`` long ([CLS] ... [SEP]). Pixels and token ids are random but valid, so the
    cost is the real one for the geometry.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.llava.parameters()).device
    dtype = next(model.llava.parameters()).dtype
    vocab = len(model.tokenizer)
    image_tokens = model.num_image_tokens
    first_text = 5  # the byte tokenizer's specials are 0..4 (<image> among them)
    text = torch.randint(first_text, vocab, (batch_size, text_tokens), generator=generator)
    bos = torch.full((batch_size, 1), model.tokenizer.bos_token_id)
    image = torch.full((batch_size, image_tokens), model.image_token_id)
    input_ids = torch.cat([bos, image, text], dim=1)
    vision = model.config.vision_config
    batch = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": torch.randn(
            batch_size, vision.num_channels, vision.image_size, vision.image_size, generator=generator
        ).to(device=device, dtype=dtype),
    }
    if train:
        labels = torch.full_like(input_ids, -100)
        answer = max(1, text_tokens // 3)
        labels[:, -answer:] = input_ids[:, -answer:]
        batch["labels"] = labels.to(device)
    if model.needs_text:
        tokenizer = model.text_encoder.tokenizer
        body = torch.randint(
            1000, tokenizer.vocab_size, (batch_size, max(0, context_tokens - 2)), generator=generator
        )
        cls = torch.full((batch_size, 1), tokenizer.cls_token_id)
        sep = torch.full((batch_size, 1), tokenizer.sep_token_id)
        context = torch.cat([cls, body, sep], dim=1)
        batch["context_input_ids"] = context.to(device)
        batch["context_attention_mask"] = torch.ones_like(context).to(device)
    return batch


# ------------------------------------------------------------------------------------ measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """One strategy's model, optimizer and batches, with the two timed operations."""

    def __init__(self, settings: ProfileSettings, method: str) -> None:
        self.method = method
        self.device = torch.device(settings.device)
        self.clock = time.thread_time if settings.clock == "thread" else time.perf_counter
        self.model = build_for_profile(settings, method)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0, **fused)
        common = dict(context_tokens=settings.context_tokens, seed=settings.seed)
        self.train_batch = synthetic_batch(
            self.model, batch_size=settings.batch_size, text_tokens=settings.text_tokens, **common
        )
        self.prompt = synthetic_batch(
            self.model, batch_size=1, text_tokens=settings.prompt_tokens, train=False, **common
        )

    def forward_backward(self) -> torch.Tensor:
        self.model.train()
        loss = self.model(**self.train_batch).loss
        loss.backward()
        return loss

    def train_step(self) -> None:
        self.forward_backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def prefill(self, inference_mode: bool = True) -> torch.Tensor:
        """The first answer token of the prompt. ``inference_mode=False`` runs under ``no_grad``
        instead: same operations, but visible to Python dispatch modes (host-sync counting)."""
        self.model.eval()
        with torch.inference_mode() if inference_mode else torch.no_grad():
            out = self.model(**self.prompt, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1)

    def timed(self, fn: Callable[[], Any]) -> float:
        _sync(self.device)
        start = self.clock()
        fn()
        _sync(self.device)
        return self.clock() - start

    def close(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        del self.model, self.optimizer, self.train_batch, self.prompt
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }


def static_training_bytes(model, optimizer_states: int = 2) -> dict[str, int]:
    """Bytes of weights, gradients and AdamW state (``optimizer_states`` tensors per trainable
    parameter, in the parameter's dtype as ``torch.optim.AdamW`` keeps them): the part of the
    training peak that activations come on top of. Works on ``device="meta"`` models."""
    frozen = trainable = 0
    for param in model.parameters():
        size = param.numel() * param.element_size()
        if param.requires_grad:
            trainable += size
        else:
            frozen += size
    total = frozen + trainable * (2 + optimizer_states)
    return {"frozen_weights": frozen, "trainable_weights": trainable, "total": total}


def _rss_bytes(field_name: str) -> int:
    """VmRSS / VmHWM of this process from /proc (Linux), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _release_freed_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_cpu_memory(settings: ProfileSettings, method: str) -> dict[str, Any]:
    """Peak resident memory of building ``method`` and running 2 training steps, as the increase
    over this process's resident set just before building.

    Runs in a fresh process (see :func:`_isolated`). A first, unmeasured build and step load
    every lazily imported module and start the thread pool; it is then freed and trimmed, and the
    high-water mark is reset (``/proc/self/clear_refs``), so the figure is the model's own:
    weights, gradients, AdamW state and activations.
    """
    torch.set_num_threads(settings.threads or torch.get_num_threads())
    warm = _Runner(settings, method)
    warm.train_step()
    warm.close()
    del warm
    _release_freed_memory()
    baseline = _rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:  # reset VmHWM to the current RSS (Linux >= 4.0)
        handle.write("5")
    runner = _Runner(settings, method)
    for _ in range(2):  # the second step holds weights, gradients, AdamW state and activations at once
        runner.train_step()
    peak = _rss_bytes("VmHWM")
    return {
        "peak_bytes": peak - baseline,
        "baseline_bytes": baseline,
        "kind": "CPU: peak RSS over build + 2 training steps minus the RSS before, one fresh process per method",
    }


_PRELOAD = [
    "covft.profile.cost",
    "covft.strategies",
    "covft.models.presets",
    "transformers.models.llava.modeling_llava",
    "transformers.models.clip.modeling_clip",
    "transformers.models.llama.modeling_llama",
    "transformers.models.bert.modeling_bert",
]


def _isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh process forked from a server that already imported covft
    and the model code (``forkserver``: no fork of a process whose thread pools already run)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


class _ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, ``bool(t)``, ...): on a GPU each
    one waits for every queued kernel, so a forward should have as few as possible."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_host_syncs(fn: Callable[[], Any]) -> int:
    """How many times ``fn()`` reads a tensor value on the host (each is a device sync on CUDA)."""
    with _ScalarReads() as reads:
        fn()
    return reads.count


def _flops(runner: _Runner, settings: ProfileSettings) -> dict[str, Any]:
    train_total, train_ops = count_flops(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    prefill_total, _ = count_flops(runner.prefill)
    result: dict[str, Any] = {"train_step": train_total, "prefill": prefill_total, "train_ops": train_ops}
    result["host_syncs_train_forward_backward"] = count_host_syncs(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    # inference_mode hides .item() from dispatch modes: count the same prefill under no_grad
    result["host_syncs_prefill"] = count_host_syncs(lambda: runner.prefill(inference_mode=False))
    if runner.method in ANALYTIC_METHODS:
        geometry = geometry_of(
            runner.model,
            llm_tokens=1 + runner.model.num_image_tokens + settings.text_tokens,
            prompt_tokens=1 + runner.model.num_image_tokens + settings.prompt_tokens,
            context_tokens=settings.context_tokens,
            batch=settings.batch_size,
        )
        result["analytic_train_step"] = analytic_flops(geometry, runner.method)["total"]
        prefill_geometry = geometry_of(
            runner.model,
            llm_tokens=1 + runner.model.num_image_tokens + settings.text_tokens,
            prompt_tokens=1 + runner.model.num_image_tokens + settings.prompt_tokens,
            context_tokens=settings.context_tokens,
            batch=1,
        )
        result["analytic_prefill"] = analytic_flops(prefill_geometry, runner.method, inference=True)["total"]
    return result


def _measure_interleaved(settings: ProfileSettings) -> dict[str, dict[str, Any]]:
    """All models live at once; warm-up, then round-robin timing (CPU, or small GPU geometries)."""
    runners = {m: _Runner(settings, m) for m in settings.methods}
    results: dict[str, dict[str, Any]] = {
        m: {"trainable_parameters": r.trainable, "static_training_bytes": static_training_bytes(r.model)}
        for m, r in runners.items()
    }
    for _ in range(settings.warmup):
        for runner in runners.values():
            runner.train_step()
            runner.prefill()
    train: dict[str, list[float]] = {m: [] for m in runners}
    infer: dict[str, list[float]] = {m: [] for m in runners}
    for _ in range(settings.steps):
        for method, runner in runners.items():
            train[method].append(runner.timed(runner.train_step))
    for _ in range(settings.inference_repeats):
        for method, runner in runners.items():
            infer[method].append(runner.timed(runner.prefill))
    for method, runner in runners.items():
        results[method]["train_step_s"] = _spread(train[method])
        results[method]["inference_s"] = _spread(infer[method])
        if settings.count_flops:
            results[method]["flops"] = _flops(runner, settings)
    for runner in runners.values():
        runner.close()
    return results


def _measure_sequential_cuda(settings: ProfileSettings) -> dict[str, dict[str, Any]]:
    """One model at a time on the GPU: build, reset the allocator's peak, warm up, time, free."""
    device = torch.device(settings.device)
    results: dict[str, dict[str, Any]] = {}
    for method in settings.methods:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        runner = _Runner(settings, method)
        weights = torch.cuda.memory_allocated(device)
        for _ in range(settings.warmup):
            runner.train_step()
        train = [runner.timed(runner.train_step) for _ in range(settings.steps)]
        peak = torch.cuda.max_memory_allocated(device)
        for _ in range(settings.warmup):
            runner.prefill()
        infer = [runner.timed(runner.prefill) for _ in range(settings.inference_repeats)]
        results[method] = {
            "trainable_parameters": runner.trainable,
            "static_training_bytes": static_training_bytes(runner.model),
            "train_step_s": _spread(train),
            "inference_s": _spread(infer),
            "memory": {
                "peak_bytes": peak,
                "weights_bytes": weights,
                "kind": "cuda max_memory_allocated over build + training steps",
            },
        }
        if settings.count_flops:
            results[method]["flops"] = _flops(runner, settings)
        runner.close()
    return results


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def _ratios(results: dict[str, dict[str, Any]]) -> None:
    full = results["full"]
    for entry in results.values():
        entry["ratios_vs_full"] = {
            "train_step": _ratio(entry["train_step_s"]["median"], full["train_step_s"]["median"]),
            "inference": _ratio(entry["inference_s"]["median"], full["inference_s"]["median"]),
            "peak_memory": _ratio(
                entry.get("memory", {}).get("peak_bytes"), full.get("memory", {}).get("peak_bytes")
            ),
            "train_flops": _ratio(
                entry.get("flops", {}).get("train_step"), full.get("flops", {}).get("train_step")
            ),
            "prefill_flops": _ratio(
                entry.get("flops", {}).get("prefill"), full.get("flops", {}).get("prefill")
            ),
        }
        # the spread of the step-time ratio: each timed round's ratio (same round, same load)
        own, ref = entry["train_step_s"]["samples"], full["train_step_s"]["samples"]
        per_round = [a / b for a, b in zip(own, ref, strict=True)]
        entry["ratios_vs_full"]["train_step_per_round"] = _spread(per_round)
        own, ref = entry["inference_s"]["samples"], full["inference_s"]["samples"]
        entry["ratios_vs_full"]["inference_per_round"] = _spread(
            [a / b for a, b in zip(own, ref, strict=True)]
        )


def count_only(settings: ProfileSettings) -> dict[str, Any]:
    """FLOPs only (no timing, no memory): one model at a time, freed before the next.

    For geometries that fit in memory for a step but would take too long to time, e.g. the 7B
    vision tower with a reduced LLM on a CPU.
    """
    settings = settings.resolved()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    results: dict[str, dict[str, Any]] = {}
    for method in settings.methods:
        runner = _Runner(settings, method)
        results[method] = {"trainable_parameters": runner.trainable, "flops": _flops(runner, settings)}
        runner.close()
        _release_freed_memory()
    full = results["full"]["flops"]
    for entry in results.values():
        flops = entry["flops"]
        entry["ratios_vs_full"] = {
            "train_flops": flops["train_step"] / full["train_step"],
            "prefill_flops": flops["prefill"] / full["prefill"],
        }
    device = torch.device(settings.device)
    return {
        "settings": asdict(settings),
        "machine": machine_description(device),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "flops_only": True,
        "methods": results,
    }


def format_flops_markdown(report: dict[str, Any]) -> str:
    """Counted (and, where modelled, analytic) FLOPs of a training step and a prefill, per method."""
    s = report["settings"]
    lines = [
        f"FLOPs counted with FlopCounterMode, geometry `{s['geometry']}` ({s['device']}, {s['dtype']}, batch "
        f"{s['batch_size']}, LLM layers {s['llm_layers']}, train_llm={s['train_llm']}); {report['date_utc']}",
        "",
        "| method | train step TFLOPs (counted) | analytic | train / Full FT | prefill TFLOPs | prefill / Full FT |",
        "|---|---|---|---|---|---|",
    ]
    for method, entry in report["methods"].items():
        f, r = entry["flops"], entry["ratios_vs_full"]
        analytic = f.get("analytic_train_step")
        lines.append(
            f"| {method} | {f['train_step'] / 1e12:.4f} | "
            f"{'-' if analytic is None else f'{analytic / 1e12:.4f}'} | {r['train_flops']:.4f} | "
            f"{f['prefill'] / 1e12:.4f} | {r['prefill_flops']:.4f} |"
        )
    return "\n".join(lines)


def machine_description(device: torch.device) -> str:
    """One line: the device, the threads torch uses, torch's version."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores visible"
    return f"{where}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def profile(settings: ProfileSettings) -> dict[str, Any]:
    """Measure every strategy of ``settings.methods``; returns the JSON-ready report.

    On a CPU with ``settings.memory`` the memory figures come from ``forkserver`` processes: call
    this from the ``covft`` command or under ``if __name__ == "__main__":`` in a script.
    """
    settings = settings.resolved()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    if device.type == "cuda":
        results = _measure_sequential_cuda(settings)
    else:
        results = _measure_interleaved(settings)
        if settings.memory:
            for method in settings.methods:
                results[method]["memory"] = _isolated(measure_cpu_memory, settings, method)
    _ratios(results)
    return {
        "settings": asdict(settings),
        "machine": machine_description(device),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "methods": results,
    }


# ------------------------------------------------------------------------------------- reports
def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_markdown(report: dict[str, Any]) -> str:
    """The Table E layout: method | train step | inference/sample | peak memory | ratios vs Full FT."""
    s = report["settings"]
    lines = [
        f"Geometry `{s['geometry']}` ({s['device']}, {s['dtype']}, batch {s['batch_size']}, "
        f"LLM layers {s['llm_layers']}, train_llm={s['train_llm']}, {s['clock']} clock); {report['machine']}; "
        f"{report['date_utc']}",
        "",
        "| method | train step | inference / sample (bs 1) | peak memory | train step / Full FT "
        "| inference / Full FT | memory / Full FT | train FLOPs / Full FT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in report["methods"].items():
        train, infer = entry["train_step_s"], entry["inference_s"]
        memory = entry.get("memory", {}).get("peak_bytes")
        ratios = entry["ratios_vs_full"]
        per_round = ratios["train_step_per_round"]
        train_ratio = _fmt_ratio(ratios["train_step"])
        if method != "full":
            train_ratio += f" ({_fmt_ratio(per_round['min'])}-{_fmt_ratio(per_round['max'])})"
        lines.append(
            f"| {method} | {_fmt_time(train['median'])} ({_fmt_time(train['min'])}-{_fmt_time(train['max'])}) "
            f"| {_fmt_time(infer['median'])} | "
            f"{'-' if memory is None else f'{memory / 2**20:,.0f} MiB'} | {train_ratio} | "
            f"{_fmt_ratio(ratios['inference'])} | {_fmt_ratio(ratios['peak_memory'])} | "
            f"{_fmt_ratio(ratios['train_flops'])} |"
        )
    lines.append("")
    lines.append(
        "Times: median (min-max) of the timed steps; step ratio: median ratio (min-max of the per-round "
        "ratios, rounds interleave the strategies). Memory: "
        + next(iter(report["methods"].values())).get("memory", {}).get("kind", "not measured")
        + "."
    )
    return "\n".join(lines)
