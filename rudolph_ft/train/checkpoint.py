"""Training checkpoints: a usable model directory + the training state, written atomically, last K kept.

    RUN/checkpoints/step-N/   model.safetensors, config.json, bpe.model | components.json, vqgan/,
                              training_state.pt (optimizer, scheduler, progress, RNG states), run_config.yaml
A checkpoint is first written to `step-N.tmp-*` and renamed into place, so a crash or kill during a save leaves
the previous checkpoints untouched.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["Progress", "save_checkpoint", "latest_checkpoint", "load_training_state", "capture_rng", "restore_rng"]

STATE_NAME = "training_state.pt"


@dataclass
class Progress:
    """Where a run is: optimizer steps done, and the position in the epoch they reached."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples_seen: int = 0


def capture_rng(text_rng: random.Random) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "text": text_rng.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, text_rng: random.Random) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    text_rng.setstate(_tuples(state["text"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """random.setstate wants the nested tuples that serialization may have turned into lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(run_dir: Path, step: int, write_model, state: dict, keep: int) -> Path:
    """Write `checkpoints/step-{step}` atomically: `write_model(tmp_dir)` + the state; keep the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f"step-{step}.tmp-", dir=root))
    try:
        write_model(tmp)
        torch.save(state, tmp / STATE_NAME)
        if target.exists():  # re-saving the same step (e.g. the final step after an interval save)
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(_checkpoints(root), key=_step_of)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _checkpoints(root: Path) -> list[Path]:
    return [p for p in root.glob("step-*") if p.is_dir() and ".tmp-" not in p.name and (p / STATE_NAME).is_file()]


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = _checkpoints(Path(run_dir) / "checkpoints")
    return max(found, key=_step_of) if found else None


def load_training_state(checkpoint: Path) -> dict:
    state = torch.load(checkpoint / STATE_NAME, map_location="cpu", weights_only=True)  # never runs code
    state["progress"] = Progress(**state["progress"])
    return state


def progress_dict(progress: Progress) -> dict:
    return asdict(progress)
