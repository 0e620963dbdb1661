"""The LLM side of a run: trained fully (LLaVA-1.5 stage 2), frozen, or through LoRA, with any vision strategy.

Every strategy's options carry the LLM side (:class:`~covft.strategies.base.StrategyOptions`):
``train_llm`` and ``llm_lora_r``. With ``llm_lora_r > 0`` the LLM's weights stay frozen and PEFT
LoRA adapters on its decoder layers' attention and MLP linears train instead (LLaVA-1.5's LoRA
recipe is r 128, alpha 256; covft's default alpha is twice the rank as there).

Two things this module guarantees, each a known silent failure of LoRA setups in this field:

- **Adapters stay in the LLM.** PEFT matches bare ``target_modules`` suffixes anywhere, so
  ``["q_proj", "v_proj", ...]`` also adapts a SigLIP tower's attention or Qwen2.5-VL's vision MLP.
  covft's target is one regular expression anchored at ``model.language_model.layers.N.`` (PEFT
  matches a string target against the whole module name), and :func:`apply_llm_lora` checks that
  every adapted module is under the LLM.
- **Both adapters are active.** A second ``LoraModel`` over a model that already holds the vision
  strategy's adapter (``lora``, ``dora``) makes its own adapter the only active one in every LoRA
  layer, so the vision adapter silently stops contributing while its weights still have
  ``requires_grad``. covft activates every adapter each layer holds.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from covft.errors import UserError

LLM_PREFIX = "model.language_model.layers."
"""Where the LLM's decoder layers sit in every LLaVA-family model (relative to ``model.llava``)."""
LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linears of a Llama/Mistral/Qwen2 decoder layer that get an adapter (LLaVA's ``find_all_linear_names``
minus the tower and projector)."""
ADAPTER_NAME = "llm"


class LlmSideError(UserError, ValueError):
    """An LLM-side setting that cannot work (LoRA on a frozen LLM, a rank below 0)."""


def check_llm_side(options: Any) -> None:
    """Refuse LLM-side settings that contradict each other, saying which option to change."""
    rank = options.llm_lora_r
    if rank < 0:
        raise LlmSideError(f"llm_lora_r must be >= 0 (0: no LoRA on the LLM), got {rank}")
    if rank and not options.train_llm:
        raise LlmSideError(
            f"llm_lora_r={rank} trains LoRA adapters on the LLM, but train_llm is false (the LLM "
            "frozen): set train_llm=true to train the LLM through LoRA, or llm_lora_r=0 to keep it frozen"
        )


def llm_lora_regex(targets: tuple[str, ...] = LLM_TARGETS) -> str:
    """PEFT ``target_modules`` matching ``targets`` in the LLM's decoder layers and nowhere else."""
    attention = [t for t in targets if t.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))]
    mlp = [t for t in targets if t not in attention]
    alternatives = []
    if attention:
        alternatives.append(r"self_attn\.(" + "|".join(map(re.escape, attention)) + ")")
    if mlp:
        alternatives.append(r"mlp\.(" + "|".join(map(re.escape, mlp)) + ")")
    return re.escape(LLM_PREFIX) + r"\d+\.(" + "|".join(alternatives) + ")"


def apply_llm_lora(model, options: Any) -> None:
    """Add LoRA adapters (adapter ``"llm"``) to the decoder layers of ``model.llava``'s LLM.

    Call after the vision strategy's ``apply``: every LoRA layer then has all its adapters active.
    """
    from peft import LoraConfig, LoraModel
    from peft.tuners.lora import LoraLayer

    rank = options.llm_lora_r
    alpha = options.llm_lora_alpha if options.llm_lora_alpha is not None else 2 * rank
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=options.llm_lora_dropout, target_modules=llm_lora_regex()
    )
    with warnings.catch_warnings():  # a second adapter beside the vision strategy's is the point
        warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
        LoraModel(model.llava, config, adapter_name=ADAPTER_NAME)  # injects in place
    adapted = [
        name for name, module in model.llava.named_modules() if ADAPTER_NAME in getattr(module, "lora_A", {})
    ]
    if not adapted or any(not name.startswith(LLM_PREFIX) for name in adapted):
        outside = [name for name in adapted if not name.startswith(LLM_PREFIX)]
        raise RuntimeError(
            f"LLM LoRA must adapt the LLM's decoder layers only; adapted {outside[:3] or 'nothing'}"
        )
    for module in model.llava.modules():
        if isinstance(module, LoraLayer):  # PEFT left only the newest adapter active
            module.set_adapter(sorted(module.lora_A.keys()))


def llm_trainable(model, options: Any) -> set[str]:
    """The LLM parameters the options declare trainable: all, none, or the ``"llm"`` adapters."""
    if not options.train_llm:
        return set()
    names = {name for name, _ in model.named_parameters() if model.part_of(name) == "llm"}
    if options.llm_lora_r:
        return {
            name for name in names if f".lora_A.{ADAPTER_NAME}." in name or f".lora_B.{ADAPTER_NAME}." in name
        }
    return names


def fold_llm_lora(model) -> str:
    """Merge the LLM's adapters into its weights and put the plain linears back, for export.

    Only the ``"llm"`` adapter's layers are merged and unloaded (each layer's ``merge`` with
    ``safe_merge``, which checks for NaN), so a vision strategy's own adapters are left for its
    ``fold_into_stock``. Returns what was merged ("" when the LLM has no adapter).
    """
    from peft.tuners.lora import LoraLayer

    layers = [
        (name, module)
        for name, module in model.llava.named_modules()
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A
    ]
    for name, module in layers:
        module.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])
        parent, _, child = name.rpartition(".")
        setattr(model.llava.get_submodule(parent), child, module.get_base_layer())
    return f"merged LoRA into {len(layers)} LLM linear layers" if layers else ""
