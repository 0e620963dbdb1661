"""Upload an exported directory to the Hugging Face Hub with ``huggingface_hub``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covft.errors import MissingDependencyError, UserError


def check_hub_access(token: str | None = None) -> None:
    """Fail before any work when an upload cannot happen: no package, offline mode, not logged in.

    Reads local state only (no network): whether the token is valid shows at upload time.
    """
    hub = _hub()
    if hub.is_offline_mode():
        raise UserError(
            "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, so nothing can be uploaded: unset it"
        )
    if token is None and hub.get_token() is None:
        raise UserError(
            "not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN to a token with write access"
        )


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create the model repository ``repo_id`` if needed and upload ``folder`` to it; the commit URL.

    ``private`` applies when the repository is created (None: the Hub's default, public for a
    user); an existing repository keeps its visibility. ``token`` defaults to the logged-in one.
    """
    check_hub_access(token)
    hub = _hub()
    folder = Path(folder)
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message or f"Upload {folder.name}, exported by covft",
        )
    except hub.errors.HfHubHTTPError as error:
        raise UserError(f"uploading {folder} to {repo_id} failed: {error}") from error
    return str(commit.commit_url)


def _hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.errors
    except ImportError as error:
        raise MissingDependencyError(
            "uploading to the Hub needs huggingface_hub: pip install huggingface_hub"
        ) from error
    return huggingface_hub
