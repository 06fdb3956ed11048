"""Hugging Face Hub ids for :meth:`vitpose_fast.Model.from_pretrained`.

``"org/name"`` (e.g. ``usyd-community/vitpose-base-simple``) resolves to the repository's snapshot folder
(config.json + model.safetensors, what :func:`vitpose_fast.model.checkpoint.read_checkpoint` reads from a folder);
``"org/name/file.pth"`` resolves to one file of a repository (e.g. the official mmpose ``.pth`` files).
A cached snapshot loads without a network; with one, missing files are downloaded. ``huggingface_hub`` is an
optional dependency imported only here, when a string that is no local path looks like a Hub id.

``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` are read when a model is loaded (huggingface_hub reads them once, at
import), so setting them in a running process takes effect.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vitpose_fast.model.errors import CheckpointError

__all__ = ["is_hub_id", "resolve_hub_id", "HubError"]

# Checkpoint suffixes of a file inside a repository ("org/name/vitpose-b.pth").
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_REPO_FILE = re.compile(rf"^({_PART}/{_PART})/([^\\]+)$")
_TRUE = {"1", "on", "yes", "true"}


class HubError(CheckpointError):
    """A Hub id that cannot be resolved to local files."""


def _split(src: str):
    """(repo_id, filename or None) of a Hub id, or None when ``src`` does not look like one."""
    if src.startswith(("/", ".", "~")) or "\\" in src or "//" in src:
        return None
    if _REPO_ID.match(src) and not src.lower().endswith(_FILE_SUFFIXES):
        return src, None
    m = _REPO_FILE.match(src)
    if m and src.lower().endswith(_FILE_SUFFIXES):
        return m.group(1), m.group(2)
    return None


def is_hub_id(src) -> bool:
    """True for ``org/name`` or ``org/name/path/file.pth`` strings that are not an existing local path. A string
    whose first part is a local folder (``runs/tiny/bset.pth`` with a ``runs`` folder here) is a path with a
    typo, not a Hub id: it is not looked up on the Hub."""
    if not isinstance(src, str) or os.path.exists(src) or _split(src) is None:
        return False
    return not os.path.isdir(src.split("/", 1)[0])


def _hint(src: str, repo_id: str, filename) -> str:
    what = f"{repo_id} {filename}" if filename else repo_id
    return (
        f"to fetch it, run `hf download {what}` (`huggingface-cli download {what}` with huggingface_hub < 1.0) "
        f"where a network is available; a local folder (Hugging Face save_pretrained layout) or checkpoint file "
        f"(.pth, .safetensors, our .pt) works too: Model.from_pretrained('path/to/folder_or_file')"
    )


def resolve_hub_id(src: str) -> Path:
    """A Hub id -> a local snapshot folder (``org/name``) or file (``org/name/file.pth``).

    Raises :class:`HubError` naming what to run when huggingface_hub is missing, the id is unknown, or the
    files are neither cached nor downloadable (offline).
    """
    parts = _split(src)
    if parts is None:
        raise HubError(f"{src!r} is not a Hugging Face Hub id (expected 'org/name' or 'org/name/file.pth')")
    repo_id, filename = parts
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
    except ImportError:
        raise HubError(
            f"{src!r} is not a local file or folder, and loading it as a Hugging Face Hub id needs the "
            f"huggingface_hub package (pip install huggingface_hub); {_hint(src, repo_id, filename)}"
        ) from None

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    kwargs = dict(cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline)
    try:
        if filename is None:
            # The weights and config only: the official repos also hold processor configs and READMEs.
            path = huggingface_hub.snapshot_download(
                repo_id, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.pth", "*.pt"], **kwargs
            )
        else:
            path = huggingface_hub.hf_hub_download(repo_id, filename, **kwargs)
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as e:
        raise HubError(
            f"{src!r} is not a local file or folder, and the Hugging Face Hub has no repository {repo_id!r} "
            f"(or it is private: `hf auth login`): {type(e).__name__}; {_hint(src, repo_id, filename)}"
        ) from e
    except getattr(hub_errors, "RemoteEntryNotFoundError", ()) as e:  # huggingface_hub >= 1.0
        raise HubError(f"the Hugging Face repository {repo_id!r} has no file {filename!r}") from e
    except Exception as e:  # offline, no connection, cache miss: huggingface_hub raises several types
        why = "HF_HUB_OFFLINE is set" if offline else "the download failed"
        raise HubError(
            f"{src!r} is not a local file or folder, and as a Hugging Face Hub id it cannot be loaded: {why} and "
            f"the files are not in the Hub cache ({kwargs['cache_dir'] or 'the default cache'}; {type(e).__name__}: {e}); "
            f"{_hint(src, repo_id, filename)}"
        ) from e
    return Path(path)
