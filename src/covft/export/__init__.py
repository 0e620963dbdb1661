"""Export covft models to stock Hugging Face directories, and upload them to the Hub.

summary = export_checkpoint("runs/lora", "export/lora")   # LoRA/DoRA merged into the weights
push_to_hub("export/lora", "me/llava-lora")
"""

from covft.export.hub import check_hub_access, push_to_hub
from covft.export.stock import ExportSummary, check_exportable, export_checkpoint, export_model

__all__ = [
    "ExportSummary",
    "check_exportable",
    "check_hub_access",
    "export_checkpoint",
    "export_model",
    "push_to_hub",
]
