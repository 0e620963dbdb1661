"""The LLM side of a run: trained fully (LLaVA-1.5 stage 2), frozen, or through LoRA, with any vision strategy.

Every strategy's options carry the LLM side (:class:`~covft.strategies.base.StrategyOptions`):
``train_llm`` and ``llm_lora_r``. With ``llm_lora_r > 0`` the LLM's weights stay frozen and PEFT
LoRA adapters on its decoder layers' attention and MLP linears train instead (LLaVA-1.5's LoRA
recipe is r 128, alpha 256; covft's default alpha is twice the rank as there).

With ``llm_quantization`` (``"nf4"`` or ``"fp4"``) the LLM's decoder linears are held in 4 bits by
bitsandbytes under the adapters (QLoRA): the base weights of the model as built are quantized in
place, so the same code serves a preset and a local checkpoint, and a checkpoint reloads by
quantizing the same base again. bitsandbytes is optional (``pip install 'covft[qlora]'``).

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

import torch
from torch import nn

from covft.errors import UserError

LLM_PREFIX = "model.language_model.layers."
"""Where the LLM's decoder layers sit in every LLaVA-family model (relative to ``model.llava``)."""
LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linears of a Llama/Mistral/Qwen2 decoder layer that get an adapter (LLaVA's ``find_all_linear_names``
minus the tower and projector)."""
ADAPTER_NAME = "llm"


QUANTIZATIONS = ("nf4", "fp4")
"""bitsandbytes 4-bit formats for QLoRA (``nf4``: the QLoRA paper's NormalFloat)."""


class LlmSideError(UserError, ValueError):
    """An LLM-side setting that cannot work (LoRA on a frozen LLM, a rank below 0, 4 bits without LoRA)."""


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
    kind = options.llm_quantization
    if kind is not None and kind not in QUANTIZATIONS:
        raise LlmSideError(f"llm_quantization must be one of {QUANTIZATIONS} or null, got {kind!r}")
    if kind is not None and not rank:
        raise LlmSideError(
            f"llm_quantization={kind!r} holds the LLM in 4 bits, which can only train through adapters "
            "(QLoRA): set llm_lora_r (e.g. 64), or llm_quantization=null"
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


def quantize_llm(model, kind: str) -> int:
    """Replace the LLM's decoder linears by bitsandbytes 4-bit ones holding the same weights; how many.

    The compute dtype is the weights' own (float32 on CPU, bfloat16 for a bf16 model); the tower,
    projector, embeddings and ``lm_head`` stay as they are (the QLoRA recipe, and every vision
    strategy needs its tower in full precision).
    """
    try:
        import bitsandbytes as bnb
    except ImportError as error:
        raise LlmSideError(
            "llm_quantization needs bitsandbytes, which is not installed: pip install 'covft[qlora]'"
        ) from error
    pattern = re.compile(llm_lora_regex())
    targets = [
        (name, module)
        for name, module in model.llava.named_modules()
        if pattern.fullmatch(name) and type(module) is nn.Linear
    ]
    for name, linear in targets:
        if linear.weight.device.type == "meta":
            raise LlmSideError(
                "llm_quantization needs the weights themselves; the model is on the meta device"
            )
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=linear.weight.dtype,
            quant_type=kind,
            quant_storage=torch.uint8,
            device="meta",
        )
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type=kind)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.llava.get_submodule(parent), child, quantized.to(linear.weight.device))  # quantizes
    return len(targets)


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
    four_bit = 0
    for name, module in layers:
        parent, _, child = name.rpartition(".")
        if (
            type(module.get_base_layer()) is not torch.nn.Linear
        ):  # QLoRA: 4-bit base, exported in full precision
            merged = _dequantized_linear(module.get_base_layer())
            with torch.no_grad():
                merged.weight += module.get_delta_weight(ADAPTER_NAME).to(merged.weight.dtype)
            four_bit += 1
        else:
            module.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])
            merged = module.get_base_layer()
        setattr(model.llava.get_submodule(parent), child, merged)
    if not layers:
        return ""
    note = f" (dequantized from 4 bits: {four_bit})" if four_bit else ""
    return f"merged LoRA into {len(layers)} LLM linear layers{note}"


def _dequantized_linear(quantized) -> Any:
    """A plain ``nn.Linear`` with the weights a bitsandbytes 4-bit linear computes with."""
    import bitsandbytes.functional as F

    weight = F.dequantize_4bit(quantized.weight.data, quantized.weight.quant_state).to(
        quantized.compute_dtype
    )
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=quantized.bias is not None)
    linear.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if quantized.bias is not None:
            linear.bias.copy_(quantized.bias)
    return linear
