"""The training-start audit's findings, its summary record and its log lines (see :mod:`covft.train.audit`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SHOWN = 5
"""Names listed per kind of problem (the count says how many there are)."""

PROBLEMS: dict[str, tuple[str, str]] = {
    "undeclared": (
        "requires_grad=True but the strategy does not declare it: it trains anyway (a leak)",
        "set what trains only through the strategy (method, method_options); remove the code that "
        "unfroze it (a PEFT call, a manual requires_grad_, a module added after apply_vft)",
    ),
    "declared_frozen": (
        "declared by the strategy but requires_grad=False: it will not train",
        "something froze it after the strategy was applied (a PEFT wrapper, a manual requires_grad_(False))",
    ),
    "groups": (
        "requires_grad and model.parameter_groups() disagree",
        "parameter_groups() must return every parameter with requires_grad, in its part",
    ),
    "not_in_optimizer": (
        "declared but in no optimizer group: it never updates",
        "build the optimizer from model.parameter_groups() after applying the strategy",
    ),
    "undeclared_in_optimizer": (
        "in an optimizer group but not declared by the strategy",
        "build the optimizer from model.parameter_groups() after applying the strategy",
    ),
    "gradient": (
        "declared but got no usable gradient in the step",
        "its output does not reach the loss: features detached, a hook zeroing the gradient, a layer "
        "past vision_feature_layer, an expert that no sample was routed to (sparse routing)",
    ),
    "unchanged": (
        "declared, but its learning rate is 0: the step left it unchanged",
        "set a non-zero train.lr / lr_vision / lr_projector / lr_llm for its part",
    ),
    "part_unchanged": (
        "a part with declared tensors of which none changed in the step: it does not train",
        "check the part's learning rate and that the step was not skipped (an fp16 overflow, a non-finite loss)",
    ),
    "frozen_gradient": (
        "not declared but got a gradient",
        "it has requires_grad or shares storage with a trained tensor; freeze it through the strategy",
    ),
    "frozen_changed": (
        "not declared but changed by the step (frozen weights must stay bitwise equal)",
        "something writes frozen weights in place (a hook, a callback, a tied weight)",
    ),
    "reload_trainable_set": (
        "trainable before saving but not after covft.load_pretrained, or the reverse",
        "the strategy's trainable set must follow from its saved options alone",
    ),
    "reload_missing": (
        "declared but absent from the model covft.load_pretrained rebuilt",
        "the strategy must rebuild the same modules when re-applied on load",
    ),
    "reload_differs": (
        "declared but different after save_pretrained and covft.load_pretrained: it does not save",
        "the checkpoint does not store its trained value (check what save_pretrained writes for it)",
    ),
}


@dataclass(frozen=True)
class Finding:
    """One problem of one parameter: its name, the kind (a key of :data:`PROBLEMS`) and a detail."""

    name: str
    kind: str
    detail: str = ""


def _problems(findings: list[Finding]) -> list[dict[str, Any]]:
    """Findings grouped by kind, in :data:`PROBLEMS` order: description, count, first names, fix."""
    grouped: list[dict[str, Any]] = []
    for kind, (description, fix) in PROBLEMS.items():
        found = [f for f in findings if f.kind == kind]
        if found:
            names = [f"{f.name} ({f.detail})" if f.detail else f.name for f in found[:SHOWN]]
            grouped.append(
                {"kind": kind, "problem": description, "count": len(found), "names": names, "fix": fix}
            )
    return grouped


def _tally(
    names: list[str],
    params: Mapping[str, int],
    gradients: Mapping[str, str | None] | None,
    changed: set[str] | None,
    trainable: bool,
) -> dict[str, Any]:
    """Tensor and parameter counts of ``names``: got a gradient / changed (trainable), unchanged (frozen)."""
    record: dict[str, Any] = {"tensors": len(names), "parameters": sum(params[n] for n in names)}
    if gradients is None or changed is None:
        return record
    if trainable:
        record["got_gradient"] = sum(gradients[n] is None for n in names)
        record["changed"] = sum(n in changed for n in names)
    else:
        record["unchanged"] = sum(n not in changed for n in names)
    return record


def summarise(
    *,
    step: int | None,
    strategy: str | None,
    params: Mapping[str, int],
    parts: Mapping[str, str],
    declared: set[str],
    gradients: Mapping[str, str | None] | None,
    changed: set[str] | None,
    expected_without_gradient: set[str],
    findings: list[Finding],
    round_trip: dict[str, Any],
    deferred: list[str],
    rechecked: int,
    unverified: list[str],
    skip_steps: str | None,
) -> dict[str, Any]:
    """The audit's record in ``train_summary.json`` (``passed`` is true when nothing was found)."""
    trainable: dict[str, Any] = {}
    frozen: dict[str, Any] = {}
    for part in dict.fromkeys(parts.values()):
        ours = [n for n in parts if parts[n] == part]
        live = [n for n in ours if n in declared and n not in expected_without_gradient]
        if live:
            trainable[part] = _tally(live, params, gradients, changed, trainable=True)
        still = [n for n in ours if n not in declared]
        if still:
            frozen[part] = _tally(still, params, gradients, changed, trainable=False)
    return {
        "passed": not findings,
        "step": step,
        "strategy": strategy,
        "trainable": trainable,
        "frozen": frozen,
        "expected_without_gradient": sorted(expected_without_gradient),
        "round_trip": round_trip,
        "deferred": deferred,
        "rechecked": rechecked,
        "unverified": unverified,
        "not_checked": skip_steps,
        "problems": _problems(findings),
    }


def _trainable_line(part: str, record: dict[str, Any]) -> str:
    line = f"  trainable {part}: {record['tensors']} tensors, {record['parameters']:,} parameters"
    if "changed" in record:
        line += f"; {record['got_gradient']} got a finite non-zero gradient, {record['changed']} changed"
    return line


def _frozen_line(part: str, record: dict[str, Any]) -> str:
    line = f"  frozen {part}: {record['tensors']} tensors, {record['parameters']:,} parameters"
    if "unchanged" in record:
        line += f"; {record['unchanged']} bitwise unchanged"
    return line


def format_report(report: dict[str, Any], strict: bool) -> list[str]:
    """The audit's log lines."""
    lines = [f"covft audit (step {report['step']}, strategy {report['strategy']}):"]
    lines += [f"  passed over {note}" for note in report["deferred"]]
    lines += [_trainable_line(part, record) for part, record in report["trainable"].items()]
    lines += [_frozen_line(part, record) for part, record in report["frozen"].items()]
    if report["rechecked"]:
        lines.append(
            f"  {report['rechecked']} of them had an exactly zero gradient in step {report['step']} "
            "(LoRA's A while B is zero; CoVFT's routing path while its experts are identical) and got "
            "one in a later step"
        )
    if report["unverified"]:
        lines.append(
            f"  {len(report['unverified'])} of them had an exactly zero gradient in step {report['step']}"
            " and the run ended before a later step could show one: not verified (e.g. "
            f"{report['unverified'][0]})"
        )
    if report["expected_without_gradient"]:
        count = len(report["expected_without_gradient"])
        lines.append(f"  {count} declared tensors past vision_feature_layer: no gradient expected")
    if report["not_checked"]:
        lines.append(f"  gradients and changes not checked: {report['not_checked']}")
    trip = report["round_trip"]
    if "equal_tensors" in trip:
        lines.append(
            f"  round trip (save_pretrained, covft.load_pretrained): {trip['equal_tensors']} "
            "trainable tensors equal"
        )
    else:
        lines.append(f"  round trip not checked: {trip['skipped']}")
    if report["passed"]:
        return [*lines, "  passed"]
    count = sum(problem["count"] for problem in report["problems"])
    severity = "error (train.audit=strict)" if strict else "warning; train.audit=strict makes it an error"
    lines.append(f"  FAILED ({severity}): {count} problems")
    for problem in report["problems"]:
        names = ", ".join(problem["names"]) + (", ..." if problem["count"] > len(problem["names"]) else "")
        lines.append(f"  - {problem['problem']} ({problem['count']}): {names}")
        lines.append(f"    Fix: {problem['fix']}")
    return lines
