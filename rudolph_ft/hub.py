"""Where weights come from: local files and folders, or the Hugging Face hub cache, with clear offline errors."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from .config import HubFile

__all__ = ["WeightsNotFoundError", "is_offline", "resolve_file", "resolve_model_dir", "local_path"]


class WeightsNotFoundError(FileNotFoundError):
    """A weights/tokenizer file could not be found locally nor downloaded. The message says what to do."""


def is_offline(offline: bool | None = None) -> bool:
    """True when downloads are switched off by argument or by `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`."""
    if offline is not None:
        return offline
    return any(os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _not_found_message(hub: HubFile, what: str, reason: str) -> str:
    # `hf` is huggingface_hub's command line (it replaced `huggingface-cli`)
    return (
        f"{what}: cannot get {hub.filename!r} from hub repo {hub.repo_id!r} ({reason}).\n"
        f"  Download it where you have internet access, e.g.\n"
        f"    hf download {hub.repo_id} {hub.filename}\n"
        f"  and copy the HF cache (~/.cache/huggingface/hub) here, or load the file from a local path:\n"
        f"    {_local_copy_hint(hub.filename, what)}"
    )


def _local_copy_hint(filename: str, what: str) -> str:
    """The Python call (and command-line option, where there is one) that reads a local copy of the file."""
    if "tokenizer" in what:
        return (f'from rudolph_ft import load_tokenizer; load_tokenizer("/path/to/{filename}")  /  '
                f"--tokenizer /path/to/{filename}")
    if "VQGAN" in what:
        return f'from rudolph_ft import load_vqgan; load_vqgan("/path/to/{filename}")  /  --vqgan /path/to/{filename}'
    preset = what.split()[1] if what.startswith("RuDOLPH ") and len(what.split()) > 2 else "350M"
    return f'from rudolph_ft import load_model; load_model("/path/to/{filename}", preset="{preset}")'


def resolve_file(
    hub: HubFile,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    what: str = "weights",
) -> Path:
    """The local path of `hub`'s file: from the HF cache, else downloaded into it (unless offline).

    Offline (argument, `HF_HUB_OFFLINE=1`) and missing from the cache raises `WeightsNotFoundError` at once,
    naming the repo, the file and how to point to a local copy; no retry loop.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=cache_dir)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    if is_offline(offline):
        raise WeightsNotFoundError(_not_found_message(hub, what, "offline mode and not in the local HF cache"))
    try:
        return Path(hf_hub_download(hub.repo_id, hub.filename, cache_dir=cache_dir))
    except Exception as exc:  # network errors, gated/missing repos: all end the same way for a user
        raise WeightsNotFoundError(_not_found_message(hub, what, f"{type(exc).__name__}: {exc}")) from exc


def local_path(path_or_name: str | os.PathLike) -> Path | None:
    """`path_or_name` as an existing local path, or None when it names no file or folder."""
    path = Path(path_or_name).expanduser()
    return path if path.exists() else None


def resolve_model_dir(path: str | os.PathLike, *, echo: Callable[[str], None] | None = None) -> Path:
    """A model directory (holding `config.json`, or `base.json`: a LoRA adapter folder): `path` itself, or a training
    run's `final/` model, else (an unfinished run) its newest complete `checkpoints/step-N/`, which `echo`, when
    given, is told about."""
    path = Path(path).expanduser()
    if _is_model_dir(path):
        return path
    if _is_model_dir(path / "final"):
        return path / "final"
    # only step-N itself: a save in progress (or killed) lives in step-N.tmp-* until it is complete, and an old
    # checkpoint is renamed to step-N.del-* before it is deleted (train/checkpoint.py)
    checkpoints = [p for p in path.glob("checkpoints/step-*")
                   if re.fullmatch(r"step-\d+", p.name) and _is_model_dir(p)]
    if checkpoints:
        newest = max(checkpoints, key=lambda p: int(p.name.removeprefix("step-")))
        if echo is not None:
            echo(f"{path}: no final model yet (unfinished run); using its newest checkpoint {newest}")
        return newest
    raise FileNotFoundError(f"{path}: not a model directory (no config.json) nor a training run with a final model "
                            "or checkpoints")


def _is_model_dir(path: Path) -> bool:
    """A saved model (`config.json`) or a LoRA adapter (`base.json`, naming its base model)."""
    return (path / "config.json").is_file() or (path / "base.json").is_file()
