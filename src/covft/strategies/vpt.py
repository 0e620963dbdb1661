"""VPT-deep: learnable prompt tokens inserted after the class token before every block, dropped after it.

Implemented with forward hooks on the encoder layers (the layer class and its forward stay
untouched). The output hook is prepended so transformers' hidden-state capture, itself a hook,
records each block's output without the prompts. (``hidden_states[0]``, the input of block 0,
is recorded after block 0's prompts were inserted; no LLaVA feature layer selects it.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from covft.models.towers import has_cls_token
from covft.strategies.base import Strategy, StrategyOptions, register_strategy


@dataclass
class VptOptions(StrategyOptions):
    num_prompts: int = 50
    """Prompt tokens per block (VPT-deep)."""
    layers: list[int] | None = None
    """Blocks that get prompts; default every block that feeds the LLM."""


def _insert(prefix: int, prompt: nn.Parameter):
    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens = prompt.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        hidden = torch.cat([hidden[:, :prefix], tokens, hidden[:, prefix:]], dim=1)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    return pre_hook


def _drop(prefix: int, count: int):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (torch.cat([output[0][:, :prefix], output[0][:, prefix + count :]], dim=1), *output[1:])
        return torch.cat([output[:, :prefix], output[:, prefix + count :]], dim=1)

    return hook


@register_strategy
class Vpt(Strategy):
    name = "vpt"
    Options = VptOptions
    changes_structure = True
    adds_beyond_stock = "learned prompt tokens inserted into the vision blocks"

    def apply(self, model) -> None:
        if model.family.packed:
            raise NotImplementedError(
                f"VPT on {model.family.display}'s packed tower is not implemented: its blocks attend within "
                "windows and images of packed tokens, so prompts / instruction tokens would have to join every "
                "attention segment. Use lora, dora, bitfit, selective, full or covft"
            )
        layers = self.options.layers if self.options.layers is not None else list(range(model.feeding_layers))
        prefix = 1 if has_cls_token(model.vision_tower) else 0
        config = model.llava.config.vision_config
        dim, count = config.hidden_size, self.options.num_prompts
        bound = math.sqrt(6.0 / float(3 * config.patch_size**2 + dim))  # VPT's Xavier-uniform bound
        reference = next(model.vision_tower.parameters())
        for index in layers:
            block = model.encoder_layers[index]
            prompt = nn.Parameter(torch.empty(count, dim, device=reference.device, dtype=reference.dtype))
            if prompt.device.type != "meta":
                nn.init.uniform_(prompt, -bound, bound)
            block.register_parameter("vpt_prompt", prompt)
            block.register_forward_pre_hook(_insert(prefix, prompt), with_kwargs=True)
            block.register_forward_hook(_drop(prefix, count), prepend=True)
        self.layers = layers

    def vision_trainable(self, model):
        return [n for n, _ in model.named_parameters() if n.endswith(".vpt_prompt")]
