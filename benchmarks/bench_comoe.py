"""CoMoE block: covft's fused experts vs the paper release's loop over experts.

Measures, side by side in one run and on the same weights and inputs, forward+backward time
(median over repeats after warm-up) and the activation memory kept for backward (sum of unique
storages saved by autograd, parameters excluded, via ``torch.autograd.graph.saved_tensors_hooks``),
plus the CUDA peak memory when run on a GPU.

    python benchmarks/bench_comoe.py                          # CLIP ViT-L geometry, CPU fp32, batch 2
    python benchmarks/bench_comoe.py --mlp swiglu             # Qwen2.5-VL vision MLP geometry (SwiGLU)
    python benchmarks/bench_comoe.py --device cuda --batch 8  # bf16 on a GPU

The "release" formulation runs E MLPs (``nn.Linear`` layers) one after the other, stacks their
outputs into a ``[B, N, E, d]`` tensor and takes the gate-weighted sum over E. ``--mlp clip``:
fc1 -> QuickGELU -> fc2 (CLIP ViT-L/14-336: d=1024, h=4096, 577 tokens) against
``covft.nn.FusedExperts``; ``--mlp swiglu``: ``down(silu(gate(x)) * up(x))`` with biases
(Qwen2.5-VL's vision MLP: d=1280, h=3420; 576 patches, a 336x336 image) against
``covft.nn.FusedSwiGLUExperts``."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from covft.nn import FusedExperts, FusedSwiGLUExperts, QuickGELU

GEOMETRIES = {
    "clip": {"tokens": 577, "dim": 1024, "hidden": 4096},
    "swiglu": {"tokens": 576, "dim": 1280, "hidden": 3420},
}
"""Default tokens, model width d and MLP width h per ``--mlp``."""


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding a copy of one expert's ``weight [out, in]`` and ``bias``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


class _ExpertMLP(nn.Module):
    """One CLIP-style expert: fc1, act, fc2."""

    def __init__(self, fused: FusedExperts, e: int) -> None:
        super().__init__()
        self.fc1 = _linear(fused.fc1_weight[e], fused.fc1_bias[e])
        self.act = fused.act
        self.fc2 = _linear(fused.fc2_weight[e].t(), fused.fc2_bias[e])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _ExpertSwiGLU(nn.Module):
    """One gated expert as Qwen2.5-VL writes its vision MLP: down(act(gate(x)) * up(x))."""

    def __init__(self, fused: FusedSwiGLUExperts, e: int) -> None:
        super().__init__()

        def bias(tensor):
            return None if tensor is None else tensor[e]

        self.gate_proj = _linear(fused.gate_weight[e], bias(fused.gate_bias))
        self.up_proj = _linear(fused.up_weight[e], bias(fused.up_bias))
        self.down_proj = _linear(fused.down_weight[e].t(), bias(fused.down_bias))
        self.act_fn = fused.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class ReleaseLoopExperts(nn.Module):
    """The paper release's CoMoE experts: a loop over MLPs, outputs stacked to ``[B, N, E, d]``,
    with the weights of ``fused`` (FusedExperts or FusedSwiGLUExperts)."""

    def __init__(self, fused: FusedExperts | FusedSwiGLUExperts) -> None:
        super().__init__()
        expert = _ExpertMLP if isinstance(fused, FusedExperts) else _ExpertSwiGLU
        reference = next(fused.parameters())
        self.experts = nn.ModuleList(expert(fused, e) for e in range(fused.num_experts)).to(reference)

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([expert(x) for expert in self.experts], dim=2)
        return (stacked * gates[:, None, :, None]).sum(dim=2)


def build_fused(mlp: str, experts: int, dim: int, hidden: int) -> FusedExperts | FusedSwiGLUExperts:
    """covft's fused experts for ``mlp``: "clip" (QuickGELU) or "swiglu" (SiLU, with biases)."""
    if mlp == "clip":
        return FusedExperts(experts, dim, hidden, QuickGELU())
    return FusedSwiGLUExperts(experts, dim, hidden, bias=True)


@dataclass
class Measurement:
    """One implementation's numbers: median fwd+bwd seconds, bytes saved for backward, CUDA peak,
    and every timed fwd+bwd in order."""

    name: str
    median_s: float
    saved_bytes: int
    peak_bytes: int | None
    times_s: list[float]


def saved_activation_bytes(step: Callable[[], torch.Tensor], parameters: list[torch.Tensor]) -> int:
    """Bytes of the unique storages autograd keeps for backward during ``step()``, parameters excluded."""
    excluded = {p.untyped_storage().data_ptr() for p in parameters}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = step()
    del out
    return sum(storages.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    modules: dict[str, nn.Module],
    x: torch.Tensor,
    logits: torch.Tensor,
    grad_out: torch.Tensor,
    *,
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Measurement]:
    """Time ``module(x, softmax(logits))`` forward+backward for each module and measure what it
    saves for backward. Repeats alternate between the modules so that load from other processes
    on the machine affects them alike."""
    device = x.device

    def forward(module: nn.Module) -> torch.Tensor:
        return module(x, logits.softmax(dim=-1))

    def step(module: nn.Module) -> None:
        for tensor in [*module.parameters(), x, logits]:
            tensor.grad = None
        forward(module).backward(grad_out)

    saved = {
        name: saved_activation_bytes(lambda m=module: forward(m), list(module.parameters()))
        for name, module in modules.items()
    }
    peaks: dict[str, int | None] = dict.fromkeys(modules)
    if device.type == "cuda":
        for name, module in modules.items():
            step(module)
            for tensor in [*module.parameters(), x, logits]:
                tensor.grad = None
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step(module)
            _sync(device)
            peaks[name] = torch.cuda.max_memory_allocated(device) - base
    for _ in range(warmup):
        for module in modules.values():
            step(module)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(repeats):
        for name, module in modules.items():
            _sync(device)
            start = clock()
            step(module)
            _sync(device)
            times[name].append(clock() - start)
    return {
        name: Measurement(name, statistics.median(times[name]), saved[name], peaks[name], times[name])
        for name in modules
    }


def run_benchmark(
    *,
    mlp: str = "clip",
    batch: int = 2,
    tokens: int | None = None,
    dim: int | None = None,
    hidden: int | None = None,
    experts: int = 4,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Measure both implementations of ``mlp``'s experts on identical weights and inputs;
    ``tokens``/``dim``/``hidden`` default to ``GEOMETRIES[mlp]``.

    ``clock`` times each step: wall clock by default; ``time.thread_time`` (CPU time of this
    thread, with ``torch.set_num_threads(1)``) is robust to other processes loading the machine.

    Returns ``{"fused": Measurement, "loop": Measurement, "time_ratio": loop/fused median time,
    "round_ratios": loop/fused time of each repeat (the two ran back to back), "memory_saving":
    1 - fused/loop saved bytes, "max_abs_diff": largest output difference,
    "geometry": the tokens, dim and hidden used}``.
    """
    if mlp not in GEOMETRIES:
        raise ValueError(f"mlp must be one of {tuple(GEOMETRIES)}, got {mlp!r}")
    default = GEOMETRIES[mlp]
    tokens = default["tokens"] if tokens is None else tokens
    dim = default["dim"] if dim is None else dim
    hidden = default["hidden"] if hidden is None else hidden
    torch.manual_seed(seed)
    target = torch.device(device)
    fused = build_fused(mlp, experts, dim, hidden).to(device=target, dtype=dtype)
    loop = ReleaseLoopExperts(fused)
    x = torch.randn(batch, tokens, dim, device=target, dtype=dtype, requires_grad=True)
    logits = torch.randn(batch, experts, device=target, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(batch, tokens, dim, device=target, dtype=dtype)
    with torch.no_grad():
        gates = logits.softmax(dim=-1)
        max_abs_diff = (fused(x, gates) - loop(x, gates)).abs().max().item()
    results: dict = measure(
        {"fused": fused, "loop": loop}, x, logits, grad_out, repeats=repeats, warmup=warmup, clock=clock
    )
    fused_times, loop_times = results["fused"].times_s, results["loop"].times_s
    results["time_ratio"] = results["loop"].median_s / results["fused"].median_s
    results["round_ratios"] = [loop / fused for loop, fused in zip(loop_times, fused_times, strict=True)]
    results["memory_saving"] = 1.0 - results["fused"].saved_bytes / results["loop"].saved_bytes
    results["max_abs_diff"] = max_abs_diff
    results["geometry"] = {"tokens": tokens, "dim": dim, "hidden": hidden}
    return results


def format_results(results: dict) -> str:
    """The table and ratios printed by the command line."""
    mib = 2.0**20
    lines = [f"{'implementation':<16}{'fwd+bwd ms':>12}{'saved MiB':>12}{'peak MiB':>12}"]
    for key in ("fused", "loop"):
        m = results[key]
        peak = "-" if m.peak_bytes is None else f"{m.peak_bytes / mib:.1f}"
        lines.append(f"{m.name:<16}{m.median_s * 1e3:>12.1f}{m.saved_bytes / mib:>12.1f}{peak:>12}")
    rounds = results["round_ratios"]
    lines.append(
        f"loop time / fused time: {results['time_ratio']:.3f}  (per repeat {min(rounds):.3f}-{max(rounds):.3f}; "
        "target >= 0.95)"
    )
    lines.append(f"activation memory saving: {results['memory_saving']:.1%}  (target >= 40%)")
    fused_peak, loop_peak = results["fused"].peak_bytes, results["loop"].peak_bytes
    if fused_peak is not None and loop_peak is not None:
        lines.append(f"CUDA peak memory saving: {1.0 - fused_peak / loop_peak:.1%}")
    lines.append(f"max |fused - loop| output difference: {results['max_abs_diff']:.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mlp",
        choices=tuple(GEOMETRIES),
        default="clip",
        help="clip: fc1-QuickGELU-fc2 experts (CLIP ViT-L); swiglu: gated SiLU experts with biases "
        "(Qwen2.5-VL's vision MLP). Sets the default --tokens/--dim/--hidden",
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=None, help="tokens per sample (clip 577, swiglu 576)")
    parser.add_argument("--dim", type=int, default=None, help="model width d (clip 1024, swiglu 1280)")
    parser.add_argument("--hidden", type=int, default=None, help="MLP width h (clip 4096, swiglu 3420)")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="auto: float32 on CPU, bfloat16 on CUDA",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="wall clock, or CPU time of the calling thread (needs --threads 1; robust to machine load)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and (args.device != "cpu" or torch.get_num_threads() != 1):
        parser.error("--clock thread measures one CPU thread: use it with --device cpu --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here (torch {torch.__version__})")
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    results = run_benchmark(
        mlp=args.mlp,
        batch=args.batch,
        tokens=args.tokens,
        dim=args.dim,
        hidden=args.hidden,
        experts=args.experts,
        device=args.device,
        dtype=dtype,
        repeats=args.repeats,
        warmup=args.warmup,
        clock=clock,
    )
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    geometry = results["geometry"]
    print(
        f"CoMoE experts ({args.mlp}): B={args.batch} N={geometry['tokens']} d={geometry['dim']} "
        f"h={geometry['hidden']} E={args.experts}, "
        f"{dtype}, {where}, {args.clock} clock, torch {torch.__version__}"
    )
    print(format_results(results))


if __name__ == "__main__":
    main()
