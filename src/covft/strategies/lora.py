"""LoRA and DoRA on the vision tower's attention, through PEFT.

Targets are chosen by a regular expression on full module names that starts at the vision
tower, so the LLM's ``q_proj``/``v_proj`` can never get an adapter by accident (LLaVA's own
scripts match bare suffixes and do exactly that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from covft.models.names import block_prefix
from covft.strategies.base import Strategy, StrategyOptions, register_strategy


@dataclass
class LoraOptions(StrategyOptions):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None
    """Linear layers of each vision block's self-attention that get an adapter; default the
    family's attention linears (q_proj, k_proj, v_proj, out_proj for CLIP/SigLIP)."""
    layers: list[int] | None = None
    """Blocks to adapt; default every block that feeds the LLM."""


def target_regex(model, layers: list[int], targets: tuple[str, ...]) -> str:
    """The regex PEFT matches against module names (relative to the HF model): the attention linears
    ``targets`` of blocks ``layers``, anchored at the model's tower so no other tower is touched."""
    prefix, _ = block_prefix(model)
    return (
        re.escape(f"{model.family.tower}.{prefix}")
        + "("
        + "|".join(map(str, layers))
        + r")\."
        + re.escape(model.family.attention)
        + r"\.("
        + "|".join(map(re.escape, targets))
        + ")"
    )


@register_strategy
class Lora(Strategy):
    name = "lora"
    Options = LoraOptions
    changes_structure = True
    use_dora = False

    def apply(self, model) -> None:
        from peft import LoraConfig, LoraModel

        layers = self.options.layers if self.options.layers is not None else list(range(model.feeding_layers))
        config = LoraConfig(
            r=self.options.r,
            lora_alpha=self.options.alpha,
            lora_dropout=self.options.dropout,
            target_modules=target_regex(model, layers, self.targets(model)),
            use_dora=self.use_dora,
        )
        # what peft.inject_adapter_in_model does, keeping the tuner for merge_and_unload at export
        self.tuner = LoraModel(model.llava, config, adapter_name="default")
        touched = [n for n, _ in model.llava.named_modules() if n.endswith("lora_A")]
        tower = model.family.tower + "."
        if not touched or any(not n.startswith(tower) for n in touched):
            raise RuntimeError(f"LoRA must adapt the vision tower only, got {touched[:3]}")

    def targets(self, model) -> tuple[str, ...]:
        if self.options.targets is None:
            return model.family.attention_linears
        return tuple(self.options.targets)

    def vision_trainable(self, model):
        return [n for n, _ in model.named_parameters() if n.startswith(model.vision_prefix) and ".lora_" in n]

    def fold_into_stock(self, model) -> str:
        """Merge the adapters into the weights they adapt with PEFT's ``merge_and_unload``.

        ``safe_merge`` checks the merged weights for NaN before they replace the originals.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        count = sum(isinstance(m, BaseTunerLayer) for m in model.llava.modules())
        self.tuner.merge_and_unload(safe_merge=True)
        kind = "DoRA" if self.use_dora else "LoRA"
        return f"merged {count} {kind} adapters into their weights (PEFT merge_and_unload)"


@register_strategy
class Dora(Lora):
    name = "dora"
    use_dora = True
