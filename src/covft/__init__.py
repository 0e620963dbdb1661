"""covft: context-aware visual fine-tuning (CoVFT) for LLaVA-style multimodal LLMs."""

__version__ = "0.1.0"
