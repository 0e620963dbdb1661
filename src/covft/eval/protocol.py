"""Evaluation protocols: how prompts are worded, what the router reads, which scoring rules apply.

A protocol is chosen once per run (``covft eval --protocol``) and recorded in its
``eval_settings.json``; every item an adapter builds carries its protocol's name in ``protocol``,
so scoring (:func:`covft.eval.score`) knows which rules to apply. Three protocols exist:

- ``llava15`` (default, the paper's): prompts and router text exactly as the CoVFT release's
  evaluation scripts produce them (LLaVA-1.5's question files and Cambrian-1's scripts, with the
  router text each script passes to the context encoder), scored by the official scripts' rules.
- ``lmms-eval``: the prompts lmms-eval's tasks of the same benchmarks build; the router reads the
  whole prompt, as in training; scored by the same official rules.
- ``suite``: items that carry their own prompt and router text (a suite directory, e.g. the
  conflict world's held-out suite) scored by covft's tolerant rules (docs/benchmarks.md).

The router text itself is always :func:`covft.data.contract.router_text`, the function training
uses; a protocol only says which strings of a benchmark's prompt it deletes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from covft.data.contract import router_text
from covft.eval.benchmarks.base import MC_SUFFIX, MC_SUFFIX_CN

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Protocol", "RouterRule", "describe", "get_protocol"]


@dataclass(frozen=True)
class RouterRule:
    """What the router text deletes from a benchmark's prompt (:func:`router_text`'s arguments)."""

    remove: tuple[str, ...] = ()
    cut: str | None = None

    def apply(self, prompt: str) -> str:
        return router_text([prompt], remove=self.remove, cut=self.cut)


@dataclass(frozen=True)
class Protocol:
    """A named evaluation protocol (see the module docstring)."""

    name: str
    summary: str
    scoring: str
    """``"official"`` (the benchmarks' own scripts) or ``"tolerant"`` (covft's, for suites)."""
    router: Mapping[str, RouterRule] = field(default_factory=dict)
    """Per benchmark; a benchmark not listed gives the router its whole prompt, as in training."""

    def context(self, benchmark: str, prompt: str) -> str:
        """The router text of an item of ``benchmark`` whose prompt is ``prompt``."""
        return self.router.get(benchmark, RouterRule()).apply(prompt)


def _drop(suffix: str) -> RouterRule:
    return RouterRule(remove=(f"\n{suffix}",))


#: The CoVFT release's ``conversations_context`` per script: model_vqa_loader.py (GQA, TextVQA,
#: MME) and the ai2d / realworldqa scripts pass the whole prompt; model_vqa_science.py,
#: model_vqa_mmbench.py and the mmvp / coco / ade scripts drop the letter instruction; the omni
#: script deletes each option line's "(A) ..." and the "Estimate the real-world distances ..."
#: sentence but keeps the instruction.
LLAVA15_ROUTER: dict[str, RouterRule] = {
    "mmbench_en": _drop(MC_SUFFIX),
    "mmbench_cn": _drop(MC_SUFFIX_CN),
    "scienceqa_img": _drop(MC_SUFFIX),
    "mmvp": _drop(MC_SUFFIX),
    "cvbench_coco": _drop(MC_SUFFIX),
    "cvbench_ade20k": _drop(MC_SUFFIX),
    "cvbench_omni3d": RouterRule(
        remove=("Estimate the real-world distances between objects in this image.",), cut=r"\([A-Z]\).*"
    ),
}

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "llava15",
            "the paper's: prompts and router text as the CoVFT release's evaluation scripts build them",
            "official",
            LLAVA15_ROUTER,
        ),
        Protocol("lmms-eval", "lmms-eval's prompts; the router reads the whole prompt", "official"),
        Protocol("suite", "the items' own prompt and router text (a suite directory)", "tolerant"),
    )
}
DEFAULT_PROTOCOL = "llava15"
#: Protocols that build prompts from official files (``suite`` items bring their own).
FILE_PROTOCOLS = ("llava15", "lmms-eval")


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a KeyError lists the known names otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def protocol_of(records: Sequence[Mapping[str, Any]], benchmark: str) -> Protocol:
    """The protocol the items of one benchmark were built under (items without one: ``suite``)."""
    names = {str(record.get("protocol", "suite")) for record in records}
    if len(names) > 1:
        raise ValueError(f"{benchmark}: items of several protocols {sorted(names)} cannot be scored together")
    return get_protocol(names.pop() if names else "suite")


def describe(items_by_benchmark: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """What a run's ``eval_settings.json`` records about its prompts: the protocol, and for
    TextVQA whether the prompts carry LLaVA's reference OCR tokens."""
    names = sorted({protocol_of(items, name).name for name, items in items_by_benchmark.items() if items})
    described: dict[str, Any] = {"protocol": names[0] if len(names) == 1 else names}
    textvqa = items_by_benchmark.get("textvqa")
    if textvqa and "ocr_tokens" in textvqa[0]:
        described["textvqa_ocr_tokens"] = all(item["ocr_tokens"] for item in textvqa)
    return described
