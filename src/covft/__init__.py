"""covft: context-aware visual fine-tuning (CoVFT) for LLaVA-style multimodal LLMs.

The public API::

    m = covft.build_model("tiny-test", vision_layers=24, vision_tower="clip", seed=0)
    covft.apply_vft(m, "covft", num_experts=4, routing="dense", context="cve")
    out = m(**m.collate(samples))
    m.save_pretrained(path); m2 = covft.load_pretrained(path)
"""

from covft._version import __version__
from covft.models import CovftModel, available_presets, register_preset
from covft.strategies import apply_vft, available_methods, build_model, load_pretrained

__all__ = [
    "CovftModel",
    "__version__",
    "apply_vft",
    "available_methods",
    "available_presets",
    "build_model",
    "load_pretrained",
    "register_preset",
]


def __getattr__(name: str):
    # Heavier sub-packages load on first use so `import covft` stays light.
    if name == "score":
        from covft.eval import score

        return score
    raise AttributeError(f"module 'covft' has no attribute {name!r}")
