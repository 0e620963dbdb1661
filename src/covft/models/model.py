"""`CovftModel`: a thin wrapper around a Hugging Face multimodal model (``LlavaForConditionalGeneration``
or another of covft's families, :mod:`covft.models.families`).

The wrapper owns what LLaVA does not have: the frozen text encoder, the :class:`ContextState`
that carries the instruction to context-aware modules inside the vision tower, the collator, and
the visual fine-tuning strategy applied to it. The LLaVA model itself stays a stock transformers
model (only modules are swapped in place), so hidden-state capture, gradient checkpointing,
``generate`` and FSDP/DeepSpeed wrapping keep working.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from covft.data.collator import Collator
from covft.models import families, towers
from covft.models.parts import ModelParts
from covft.models.text_encoder import DEFAULT_TEXT_ENCODER, FrozenTextEncoder, load_text_encoder
from covft.nn.context import ContextState
from covft.nn.routing import RoutedModule, gate_statistics


class CovftModel(ModelParts, nn.Module):
    """A LLaVA model plus everything covft adds to it. See ``covft.build_model``."""

    def __init__(
        self,
        llava: nn.Module,
        tokenizer: Any,
        image_processor: Any,
        *,
        template: str = "vicuna_v1",
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        base: dict | None = None,
        max_length: int = 2048,
        processor: Any = None,
    ) -> None:
        super().__init__()
        self.llava = llava
        self.family = families.family_of(llava)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = processor  # the family's multimodal processor (None: LLaVA-1.5's fixed count)
        self.template = template
        self.text_encoder_spec = text_encoder
        self.base = dict(base or {})
        self.max_length = max_length
        self.context = ContextState()
        self.text_encoder: FrozenTextEncoder | None = None
        self.strategy = None  # a covft.strategies.Strategy once apply_vft ran
        self._routed: dict[int | str, RoutedModule] | None = None

    # ------------------------------------------------------------------ structure
    @property
    def config(self):
        return self.llava.config

    @property
    def vision_tower(self) -> nn.Module:
        return self.llava.get_submodule(self.family.tower)

    @property
    def vision_prefix(self) -> str:
        """The tower's parameter prefix in :meth:`named_parameters` (``llava.model.vision_tower.``)."""
        return self.family.prefix

    @property
    def encoder_layers(self) -> nn.ModuleList:
        return towers.blocks(self.llava)[1]

    @property
    def feeding_layers(self) -> int:
        """Number of vision blocks whose output reaches the LLM (23 for LLaVA-1.5)."""
        return towers.feeding_layer_count(self.llava)

    @property
    def image_token_id(self) -> int:
        return int(self.llava.config.image_token_id)

    @property
    def num_image_tokens(self) -> int:
        return towers.num_image_tokens(self.llava)

    def ensure_text_encoder(self) -> FrozenTextEncoder:
        """Load the frozen text encoder on first need (only context-aware strategies need it)."""
        if self.text_encoder is None:
            device = next(self.llava.parameters()).device
            encoder = load_text_encoder(self.text_encoder_spec, device=device)
            if device.type != "meta":
                encoder = encoder.to(device)
            self.text_encoder = encoder
        return self.text_encoder

    # ------------------------------------------------------------------ data
    @property
    def needs_text(self) -> bool:
        return bool(self.strategy is not None and self.strategy.needs_text)

    def collator(self, template: str | None = None, max_length: int | None = None) -> Collator:
        return Collator(
            tokenizer=self.tokenizer,
            image_processor=self.image_processor,
            image_token_id=self.image_token_id,
            num_image_tokens=self.num_image_tokens,
            template=template or self.template,
            max_length=max_length or self.max_length,
            image_aspect_ratio=self.family.aspect_ratio,
            images=None if self.processor is None else self.family.image_inputs(self.processor),
            context_tokenizer=self.text_encoder.tokenizer if self.needs_text and self.text_encoder else None,
        )

    def collate(
        self,
        samples: list[dict],
        template: str | None = None,
        max_length: int | None = None,
        for_generation: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Tokenise LLaVA-format samples, preprocess images, build labels and the context inputs."""
        if self.needs_text:
            self.ensure_text_encoder()
        return self.collator(template, max_length)(samples, for_generation=for_generation)

    # ------------------------------------------------------------------ forward
    def set_context(
        self,
        context_input_ids: torch.Tensor | None,
        context_attention_mask: torch.Tensor | None,
        num_images: int,
        owner: torch.Tensor | None = None,
    ) -> None:
        """Run the frozen text encoder once and share its output with every context-aware module.

        ``num_images`` is the number of samples with images (one context row each, in
        ``pixel_values`` order); ``owner`` maps each tower row or packed token to its sample
        (:func:`covft.models.families.owner`; ``None``: row i is sample i).

        The state is kept after the forward on purpose: gradient checkpointing re-runs the vision
        blocks during backward, and they must see the same context again. The next forward with
        images overwrites every field; :meth:`generate` clears it when done (no backward follows).
        """
        if not self.needs_text:
            return
        if context_input_ids is None:
            raise ValueError(
                f"strategy {self.strategy.name!r} routes on the instruction: pass context_input_ids and "
                "context_attention_mask (m.collate(samples) builds them)"
            )
        if context_input_ids.shape[0] != num_images:
            raise ValueError(
                f"{context_input_ids.shape[0]} context rows for {num_images} samples with images; "
                "give one context per sample with images, in pixel_values order"
            )
        encoder = self.ensure_text_encoder()
        if self.strategy.needs_text_tokens:
            cls, tokens = encoder(context_input_ids, context_attention_mask)
        else:  # only the [CLS] vector: cached per distinct instruction
            cls, tokens = encoder.encode_cls(context_input_ids, context_attention_mask), None
        self.context.text = cls
        self.context.text_tokens = tokens
        self.context.text_mask = context_attention_mask  # None: every token is real
        self.context.owner = None if owner is None else owner.to(context_input_ids.device)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        context_input_ids: torch.Tensor | None = None,
        context_attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        self._prepare(input_ids, pixel_values, context_input_ids, context_attention_mask, kwargs)
        outputs = self.llava(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            labels=labels,
            **kwargs,
        )
        aux = self.auxiliary_loss() if pixel_values is not None else None
        if aux is not None and outputs.loss is not None:
            outputs.loss = outputs.loss + aux
        return outputs

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        context_input_ids: torch.Tensor | None = None,
        context_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Greedy by default; the context is computed once, before prefill (the tower's only run)."""
        self._prepare(input_ids, pixel_values, context_input_ids, context_attention_mask, kwargs)
        if pixel_values is not None:
            kwargs["pixel_values"] = pixel_values  # never pass pixel_values=None on: generate would use it
        kwargs.setdefault("do_sample", False)
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        try:
            return self.llava.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            self.context.clear()

    def _prepare(self, input_ids, pixel_values, context_input_ids, context_attention_mask, kwargs):
        """Complete the HF model's inputs (Qwen's ``mm_token_type_ids``), map tower rows to samples
        and hand each sample's context to the context-aware modules."""
        images_per_sample = kwargs.pop("images_per_sample", None)
        families.add_token_types(self.family, input_ids, self.image_token_id, kwargs)
        if not self.needs_text:
            return
        if kwargs.get("pixel_values_videos") is not None:
            raise NotImplementedError(
                f"{self.strategy.name} routes on the instruction, and routing video frames (a second tower "
                "pass) is not implemented; give frames as images of the sample, or use a strategy that "
                "does not read the instruction (freeze, full, lora, dora, bitfit, selective, vpt)"
            )
        if pixel_values is None:
            return
        batch = {"pixel_values": pixel_values, **kwargs}
        owner = families.owner(self.family, self.llava, batch, images_per_sample)
        samples = self.family.num_images(batch) if images_per_sample is None else len(images_per_sample)
        self.set_context(context_input_ids, context_attention_mask, samples, owner)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Sum of the auxiliary (load-balancing) losses of the routed modules' last forward, if any."""
        losses = [m.aux_loss for m in self.routed_modules().values() if m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else None

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.llava.gradient_checkpointing_enable(**kwargs)

    # ------------------------------------------------------------------ routing
    def routed_modules(self) -> dict[int | str, RoutedModule]:
        """The :class:`RoutedModule` s of the model (CoMoE, Q-MoE, ...), keyed by where they sit:
        the vision block's index, ``"projector"``, or else the module's name under ``llava``.

        Found by one walk over the modules, remembered until :meth:`refresh_routed_modules` (a walk
        over every module per forward costs ~50 ms at 7B).
        """
        if self._routed is None:
            self.refresh_routed_modules()
        return self._routed

    def refresh_routed_modules(self) -> None:
        """Find the routed modules again: call after swapping modules in place (``apply_vft`` does)."""
        blocks = f"{self.family.tower}.{towers.blocks(self.llava)[0]}."
        routed: dict[int | str, RoutedModule] = {}
        for name, module in self.llava.named_modules():
            if not isinstance(module, RoutedModule):
                continue
            if name.startswith(blocks):
                routed[int(name[len(blocks) :].split(".", 1)[0])] = module
            else:
                routed["projector" if name == self.family.projector[0] else name] = module
        self._routed = routed

    @property
    def routed_blocks(self) -> list[int]:
        """Indices of the vision blocks that hold a routed module (CoVFT's CoMoE blocks)."""
        return sorted(key for key in self.routed_modules() if isinstance(key, int))

    def routing_weights(self) -> dict[int | str, torch.Tensor]:
        """Per-sample routing weights [B, E] of the last forward, keyed as :meth:`routed_modules`."""
        return {
            key: module.last_gates
            for key, module in self.routed_modules().items()
            if module.last_gates is not None
        }

    def routing_stats(self) -> dict[str, float]:
        """Routing entropy (nats, mean over samples) and expert usage (mean gate) per routed block."""
        return gate_statistics(self.routing_weights())

    def save_pretrained(self, path, delta: bool = False) -> None:
        from covft.models.checkpoint import save_pretrained

        save_pretrained(self, path, delta=delta)
