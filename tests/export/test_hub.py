"""`covft export --push-to-hub`: what would be uploaded, with the Hub mocked (no network)."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest

import covft
from covft.cli import main
from covft.errors import MissingDependencyError, UserError
from covft.export import push_to_hub

COMMIT_URL = "https://huggingface.co/me/tiny/commit/abc"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = covft.build_model("tiny-test", vision_layers=4, seed=0, text_encoder="random-tiny")
    covft.apply_vft(model, "lora")
    path = tmp_path_factory.mktemp("ckpt") / "lora"
    model.save_pretrained(path)
    return path


@pytest.fixture
def hub(monkeypatch):
    """A logged-in, online Hub whose API records calls; upload_folder lists the folder it is given."""
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_logged_in")
    uploaded: dict[str, object] = {}

    def upload_folder(**kwargs):
        folder = Path(kwargs["folder_path"])
        uploaded["files"] = sorted(p.name for p in folder.iterdir())
        uploaded["card"] = (folder / "README.md").read_text()
        return mock.Mock(commit_url=COMMIT_URL)

    with mock.patch.object(huggingface_hub, "HfApi") as api_class:
        api_class.return_value.upload_folder.side_effect = upload_folder
        yield api_class, uploaded


def test_push_to_hub_uploads_the_export(checkpoint, tmp_path, hub, capsys):
    api_class, uploaded = hub
    out = tmp_path / "out"
    assert main(["export", str(checkpoint), str(out), "--push-to-hub", "me/tiny", "--private"]) == 0
    api_class.assert_called_once_with(token=None)  # the logged-in token
    api = api_class.return_value
    api.create_repo.assert_called_once_with("me/tiny", repo_type="model", private=True, exist_ok=True)
    api.upload_folder.assert_called_once()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(out) and kwargs["repo_id"] == "me/tiny"
    assert kwargs["repo_type"] == "model"
    assert uploaded["files"] == sorted(p.name for p in out.iterdir())
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"):
        assert name in uploaded["files"]
    assert 'from_pretrained("me/tiny")' in uploaded["card"]  # the card names the repository
    assert f"uploaded to {COMMIT_URL}" in capsys.readouterr().out


def test_visibility_is_left_to_the_hub_without_private(checkpoint, tmp_path, hub):
    api_class, _ = hub
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--push-to-hub", "me/tiny"]) == 0
    assert api_class.return_value.create_repo.call_args.kwargs["private"] is None


def test_a_given_token_is_passed_and_no_login_is_needed(tmp_path, hub, monkeypatch):
    api_class, _ = hub
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    (tmp_path / "README.md").write_text("card")
    assert push_to_hub(tmp_path, "me/tiny", token="hf_given") == COMMIT_URL
    api_class.assert_called_once_with(token="hf_given")


def test_not_logged_in_fails_before_exporting(checkpoint, tmp_path, hub, monkeypatch, capsys):
    api_class, _ = hub
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    out = tmp_path / "out"
    assert main(["export", str(checkpoint), str(out), "--push-to-hub", "me/tiny"]) == 1
    err = capsys.readouterr().err
    assert "not logged in to the Hugging Face Hub" in err and "hf auth login" in err and "HF_TOKEN" in err
    assert not out.exists() and not api_class.called


def test_offline_mode_fails_before_exporting(checkpoint, tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    out = tmp_path / "out"
    assert main(["export", str(checkpoint), str(out), "--push-to-hub", "me/tiny"]) == 1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err and not out.exists()


def test_a_refused_upload_names_the_repository(tmp_path, hub):
    api_class, _ = hub
    response = mock.Mock(status_code=403, headers={})
    api_class.return_value.create_repo.side_effect = huggingface_hub.errors.HfHubHTTPError(
        "403 Forbidden: you cannot write to me/tiny", response=response
    )
    with pytest.raises(UserError, match=r"uploading .* to me/tiny failed: 403 Forbidden"):
        push_to_hub(tmp_path, "me/tiny")


def test_missing_huggingface_hub_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependencyError, match="pip install huggingface_hub"):
        push_to_hub(tmp_path, "me/tiny")


def test_private_needs_push_to_hub(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--private"]) == 1
    assert "--private only applies with --push-to-hub" in capsys.readouterr().err
