"""Finding the parts of a multimodal model generically (paths come from its family)."""

from __future__ import annotations

from torch import nn

from covft.models.families import family_of


def vision_tower(llava: nn.Module) -> nn.Module:
    """The vision tower of a transformers model of one of covft's families."""
    return llava.get_submodule(family_of(llava).tower)


def find_encoder_layers(tower: nn.Module, attention: str = "self_attn") -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the one whose blocks all have ``attention`` and ``mlp``.

    CLIP keeps them at ``encoder.layers``, SigLIP (older transformers) at
    ``vision_model.encoder.layers``, Qwen towers at ``blocks`` (with ``attn``); searching by shape
    keeps covft independent of those paths.
    """
    found = [
        (name, module)
        for name, module in tower.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and all(hasattr(block, attention) and hasattr(block, "mlp") for block in module)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected one list of transformer blocks (with {attention} and mlp) in the vision tower, "
            f"found {[n for n, _ in found]}"
        )
    return found[0]


def blocks(llava: nn.Module) -> tuple[str, nn.ModuleList]:
    """(name relative to the tower, the block list) of a model of one of covft's families."""
    return find_encoder_layers(vision_tower(llava), family_of(llava).attention)


def feeding_layer_count(llava: nn.Module) -> int:
    """How many encoder blocks feed the LLM (the family decides; method.md section 1).

    LLaVA families: ``hidden_states[k]`` is the output of block ``k - 1`` (index 0 is the
    embeddings), so with ``vision_feature_layer = -2`` on 24 blocks, blocks 0..22 feed the LLM and
    block 23 never matters. Towers read through a merger after the last block: every block.
    """
    _, layers = blocks(llava)
    return family_of(llava).feeding(llava, len(layers))


def late_half(feeding: int) -> list[int]:
    """The second half of the feeding blocks: 11..22 for 23 feeding blocks (method.md 2.1)."""
    return list(range(feeding // 2, feeding))


def resolve_layers(
    feeding: int,
    *,
    layers: list[int] | None = None,
    start_layer: int | None = None,
    last_n: int | None = None,
) -> list[int]:
    """Pick blocks by an explicit list, a start index, or "the last N feeding blocks"."""
    given = [x is not None for x in (layers, start_layer, last_n)]
    if sum(given) > 1:
        raise ValueError("give at most one of layers, start_layer, last_n")
    if layers is not None:
        chosen = sorted(set(int(i) for i in layers))
    elif start_layer is not None:
        chosen = list(range(int(start_layer), feeding))
    elif last_n is not None:
        chosen = list(range(max(0, feeding - int(last_n)), feeding))
    else:
        chosen = late_half(feeding)
    bad = [i for i in chosen if not 0 <= i < feeding]
    if bad or not chosen:
        raise ValueError(
            f"blocks {bad or chosen} are not among the {feeding} blocks that feed the LLM (0..{feeding - 1})"
        )
    return chosen


def has_cls_token(tower: nn.Module) -> bool:
    """CLIP-like towers prepend a class token; SigLIP does not."""
    return any(name.endswith("class_embedding") for name, _ in tower.named_parameters())


def num_image_tokens(llava: nn.Module) -> int:
    """How many LLM positions one image occupies (LLaVA-1.5; anyres and packed families vary per
    image: their collator asks the family's processor, and packed ones have no fixed size: 0)."""
    if family_of(llava).packed:
        return 0
    config = llava.config.vision_config
    patches = (config.image_size // config.patch_size) ** 2
    tokens = patches + (1 if has_cls_token(vision_tower(llava)) else 0)
    if llava.config.vision_feature_select_strategy == "default":
        tokens -= 1
    return tokens
