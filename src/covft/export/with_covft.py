"""Export of the strategies that add modules stock transformers has none of (CoVFT, VPT, QA-ViT,
Q-MoE): a directory that transformers loads **with covft installed**::

    from transformers import AutoModelForImageTextToText
    model = AutoModelForImageTextToText.from_pretrained(OUT, trust_remote_code=True)

The directory is a complete covft checkpoint (``covft_config.json``, ``model.safetensors`` with
every weight, the tokenizer and image processor; ``covft.load_pretrained(OUT)`` reads it as well)
plus what transformers' Auto classes need to find covft: ``config.json`` (``model_type`` "covft",
an ``auto_map`` to ``covft_hf.py``) and ``covft_hf.py``, whose only lines import the two classes
below from the installed covft. So the "remote code" holds nothing of the model: it is covft at the
installed version, and transformers' import check names covft when it is missing. What
``from_pretrained`` returns is a :class:`covft.CovftModel` (its ``forward`` and ``generate`` take
the frozen text encoder's ``context_input_ids`` beside the usual inputs; ``model.collate`` builds
them), not a ``PreTrainedModel``: the strategies' modules live in covft, and serving stacks that
only know stock classes cannot run them anyway.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from covft._version import __version__
from covft.models.checkpoint import CONFIG_NAME, save_pretrained

SHIM_NAME = "covft_hf.py"
SHIM = '''"""Loads a covft model through transformers' Auto classes (trust_remote_code=True); needs covft
installed (pip install covft). The model itself is in covft, not in this file."""

from covft.export.with_covft import CovftConfig, CovftForImageTextToText  # noqa: F401
'''
AUTO_MAP = {
    "AutoConfig": "covft_hf.CovftConfig",
    "AutoModelForImageTextToText": "covft_hf.CovftForImageTextToText",
}
# what transformers' Auto classes pass on to a remote class's from_pretrained besides the user's
# keyword arguments; none of them changes what covft loads
_AUTO_KWARGS = {"trust_remote_code", "adapter_kwargs", "_from_auto", "code_revision", "subfolder", "proxies"}
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


class CovftConfig(PretrainedConfig):
    """``config.json`` of a covft export: which strategy and base model type the checkpoint holds.

    The checkpoint's complete configuration is ``covft_config.json`` beside it.
    """

    model_type = "covft"

    def __init__(
        self,
        strategy: str | None = None,
        base_model_type: str | None = None,
        covft_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.strategy = strategy
        self.base_model_type = base_model_type
        self.covft_version = covft_version
        super().__init__(**kwargs)


class CovftForImageTextToText:
    """What transformers' Auto classes call for a covft export: ``from_pretrained`` returns the
    :class:`covft.CovftModel` that ``covft.load_pretrained`` rebuilds (strategy, weights, frozen
    text encoder)."""

    config_class = CovftConfig

    @classmethod
    def register_for_auto_class(cls, auto_class: Any = None) -> None:
        """Called by the Auto classes; nothing to register (the class lives in covft)."""

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *model_args: Any, config: Any = None, **kwargs: Any
    ):
        """Load a covft export from a local directory or a Hub repository.

        ``device_map``: a device for the whole model (``"auto"``: CUDA when available); ``dtype``
        (or ``torch_dtype``): the model is built in it, as transformers builds its models (``"auto"``:
        the saved dtype). Other loading options of transformers do not apply to covft models and are
        refused by name.
        """
        from covft.strategies import load_pretrained

        hub = {name: kwargs.pop(name) for name in _HUB_KWARGS if name in kwargs}
        device = _device(kwargs.pop("device_map", None))
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        unsupported = sorted(set(kwargs) - _AUTO_KWARGS)
        if model_args or unsupported:
            raise TypeError(
                f"a covft export does not take {', '.join(unsupported) or 'positional model arguments'}: "
                "it loads with its saved strategy and weights (device_map= and dtype= apply)"
            )
        # built in dtype (not cast afterwards): the rotary buffers stay float32, as transformers keeps them
        dtype = None if dtype == "auto" else dtype
        return load_pretrained(_directory(name_or_path, hub), device=device, dtype=dtype)


def write(model, out: Path, card: str) -> None:
    """Write ``model`` (any strategy) into the empty directory ``out``: a full covft checkpoint plus
    ``config.json``, ``covft_hf.py`` and the model card ``README.md``."""
    strategy = model.strategy.name if model.strategy else None
    save_pretrained(model, out)  # every weight (never a delta), covft_config.json last
    config = CovftConfig(
        strategy=strategy, base_model_type=model.config.model_type, covft_version=__version__
    )
    config.auto_map = dict(AUTO_MAP)
    config.architectures = [CovftForImageTextToText.__name__]
    config.to_json_file(str(out / "config.json"))
    (out / SHIM_NAME).write_text(SHIM, encoding="utf-8")
    (out / "README.md").write_text(card, encoding="utf-8")


def model_card(model, strategy: str, source: str | None, location: str) -> str:
    """README.md of a covft export: what it holds and how to load it."""
    origin = f" from `{source}`" if source else ""
    return f"""---
library_name: covft
pipeline_tag: image-text-to-text
tags:
- covft
- {model.config.model_type}
---

# {Path(location).name}

A `{type(model.llava).__name__}` tuned with the covft strategy `{strategy}`, exported by covft
{__version__}{origin}. The strategy adds modules stock transformers has none of, so loading it
needs covft installed (`pip install covft`, version {__version__} or later):

```python
from transformers import AutoModelForImageTextToText

model = AutoModelForImageTextToText.from_pretrained("{location}", trust_remote_code=True)
# or, equivalently: import covft; model = covft.load_pretrained("{location}")
```

`covft_hf.py` only imports covft's loader; the model is covft's `CovftModel`, with
`forward`/`generate` taking the frozen text encoder's `context_input_ids` beside the usual inputs
(`model.collate(samples)` builds a batch from LLaVA-style samples). The directory is also a
complete covft checkpoint (`{CONFIG_NAME}`), usable with `covft eval` and the lmms-eval plugin.
"""


def _device(device_map: Any) -> str | torch.device:
    if device_map is None:
        return "cpu"
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device_map, (str, torch.device, int)):
        return torch.device(device_map) if isinstance(device_map, int) else device_map
    raise TypeError(
        f"device_map={device_map!r}: a covft export loads on one device; give a device name or 'auto'"
    )


def _directory(name_or_path: str | os.PathLike, hub: dict[str, Any]) -> Path:
    """The local directory of ``name_or_path``: itself, or a Hub repository's snapshot."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    hub = {key: value for key, value in hub.items() if value is not None}
    return Path(snapshot_download(repo_id=str(name_or_path), **hub))
