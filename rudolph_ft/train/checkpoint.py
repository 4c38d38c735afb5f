"""Training checkpoints: a usable model directory + the training state, written atomically, last K kept.

    RUN/checkpoints/step-N/   model.safetensors, config.json, bpe.model | components.json, vqgan/,
                              training_state.pt (optimizer, scheduler, progress, RNG states), run_config.yaml
A checkpoint is first written to `step-N.tmp-*` and renamed into place: the rename is the commit, so every `step-N`
is complete. An old checkpoint is renamed to `step-N.del-*` before it is deleted, so a kill during the deletion never
leaves a half-deleted `step-N`. Readers see only `step-N` folders; `remove_debris` deletes the `.tmp-` / `.del-` ones a
killed save left, when the run starts again.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..io import umask_mode

__all__ = ["Progress", "save_checkpoint", "latest_checkpoint", "load_training_state", "capture_rng", "restore_rng",
           "remove_debris"]

STATE_NAME = "training_state.pt"
COMPLETE_NAME = re.compile(r"step-(\d+)")  # step-N.tmp-* (being written) and step-N.del-* (being deleted) are not
#: tests only: `write:N` / `delete:N` make the save of step N print a line and sleep there (to kill it at that point)
PAUSE_VARIABLE = "RUDOLPH_FT_TEST_PAUSE_IN_SAVE"


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
        os.chmod(tmp, umask_mode(folder=True))  # the user's umask, not mkdtemp's private 0700
        write_model(tmp)
        torch.save(state, tmp / STATE_NAME)
        _pause_for_tests("write", step)
        # re-saving the same step (e.g. the final step after an interval save): the old copy is set aside first
        doomed = [_set_aside(target)] if target.exists() else []
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    doomed += [_set_aside(old) for old in (sorted(_checkpoints(root), key=_step_of)[:-keep] if keep > 0 else [])]
    if doomed:
        _pause_for_tests("delete", step)
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return target


def _set_aside(checkpoint: Path) -> Path:
    """Rename to `step-N.del-*` before deleting, so that a kill during the deletion leaves no half-deleted `step-N`."""
    doomed = Path(tempfile.mkdtemp(prefix=f"{checkpoint.name}.del-", dir=checkpoint.parent))
    doomed.rmdir()  # mkdtemp only reserved a unique name
    checkpoint.rename(doomed)
    return doomed


def _pause_for_tests(point: str, step: int) -> None:
    if os.environ.get(PAUSE_VARIABLE) == f"{point}:{step}":
        print(f"{PAUSE_VARIABLE}: paused at {point}:{step}", flush=True)
        time.sleep(3600)


def _checkpoints(root: Path) -> list[Path]:
    """The complete checkpoints: `step-N` folders (committed by their rename) holding the training state."""
    return [p for p in root.glob("step-*")
            if COMPLETE_NAME.fullmatch(p.name) and p.is_dir() and (p / STATE_NAME).is_file()]


def remove_debris(run_dir: str | Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Delete what a killed save left in `run_dir/checkpoints` (`step-N.tmp-*`, `step-N.del-*`), with a one-line note.

    Call it only while holding the run's lock: a running save of another process would look the same.
    """
    root = Path(run_dir) / "checkpoints"
    debris = sorted(p for p in root.glob("step-*") if p.is_dir() and not COMPLETE_NAME.fullmatch(p.name))
    for path in debris:
        shutil.rmtree(path, ignore_errors=True)
    if debris:
        echo(f"removed {len(debris)} unfinished checkpoint folder(s) an interrupted save left in {root}: "
             + ", ".join(p.name for p in debris))
    return debris


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
