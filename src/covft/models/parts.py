"""The parameter side of :class:`~covft.models.CovftModel`: which part (vision, projector, LLM) a
parameter belongs to, by the model's family, and per-part groups and counts."""

from __future__ import annotations

from torch import nn

from covft.models.names import feeding_names


class ModelParts:
    """Mixed into :class:`~covft.models.CovftModel` (needs ``family``, ``vision_prefix`` and
    ``named_parameters``)."""

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def off_path_trainable(self) -> list[str]:
        """Trainable vision parameters that cannot receive a gradient (past ``vision_feature_layer``).

        Non-empty only for CoVFT with ``train_layernorms="all"`` (the release's choice). DDP must
        then run with ``find_unused_parameters=True``.
        """
        on_path = set(feeding_names(self))
        return [
            n for n in self.trainable_parameter_names() if self.part_of(n) == "vision" and n not in on_path
        ]

    def part_of(self, name: str) -> str:
        """Which part a parameter belongs to: vision, projector, llm or text_encoder."""
        if name.startswith("text_encoder."):
            return "text_encoder"
        if name.startswith(self.family.projector_prefixes()):
            return "projector"
        if name.startswith(self.vision_prefix):
            return "vision"
        return "llm"

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part, for per-part learning rates."""
        groups: dict[str, list[nn.Parameter]] = {"vision": [], "projector": [], "llm": []}
        for name, param in self.named_parameters():
            if param.requires_grad:
                groups[self.part_of(name)].append(param)
        return groups

    def num_parameters(self, part: str | None = None, trainable: bool = False) -> int:
        return sum(
            p.numel()
            for n, p in self.named_parameters()
            if (part is None or self.part_of(n) == part) and (p.requires_grad or not trainable)
        )
