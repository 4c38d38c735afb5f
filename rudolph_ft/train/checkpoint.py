"""Training checkpoints: a usable model directory + the training state, written atomically, last K kept.

    RUN/checkpoints/step-N/   model.safetensors, config.json, bpe.model | components.json, vqgan/, run_config.yaml
                              training_state.pt   optimizer, scheduler, fp16 loss scaler, progress (main process)
                              rng-R.pt            process R's random streams (torch, CUDA, numpy, python, text)
                              optimizer/          FSDP runs: the optimizer state, one shard per process (DCP)
The model folder is consolidated (every inference command loads it); the training state is what resume needs beyond it.
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

__all__ = ["Progress", "save_checkpoint", "new_checkpoint_folder", "commit_checkpoint", "latest_checkpoint",
           "load_training_state", "capture_rng", "restore_rng", "save_rng", "load_rng", "remove_debris"]

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
    """This process's random streams: torch (dropout), CUDA, numpy, python and the BPE-dropout text stream.

    (The image view of each example is drawn from (seed, step), so it needs no saved state.)
    """
    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "text": text_rng.getstate(),
             "numpy": _numpy_state(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, text_rng: random.Random) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    text_rng.setstate(_tuples(state["text"]))
    if "numpy" in state:  # (checkpoints of rudolph-ft <= 0.4 kept no numpy state)
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state(state: tuple) -> tuple:
    """numpy's legacy RNG state with its key array as a tensor, so that `torch.load(weights_only=True)` reads it."""
    kind, keys, pos, has_gauss, gauss = state
    return kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss)


def rng_name(rank: int) -> str:
    return f"rng-{rank}.pt"


def save_rng(folder: Path, rank: int, text_rng: random.Random) -> None:
    """Write process `rank`'s random streams into a checkpoint being written (every process writes its own)."""
    torch.save(capture_rng(text_rng), Path(folder) / rng_name(rank))


def load_rng(checkpoint: Path, rank: int, state: dict | None = None) -> dict | None:
    """Process `rank`'s saved random streams; None when the checkpoint has none for it (more processes than saved).

    A checkpoint written before streams were saved per process holds the main process's in `state["rng"]`.
    """
    path = Path(checkpoint) / rng_name(rank)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    return state.get("rng") if state is not None and rank == 0 else None


def _tuples(value):
    """random.setstate wants the nested tuples that serialization may have turned into lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(run_dir: Path, step: int, write_model, state: dict, keep: int) -> Path:
    """Write `checkpoints/step-{step}` atomically: `write_model(tmp_dir)` + the state; keep the newest `keep`.

    (One process. A multi-process save is `new_checkpoint_folder`, every process writing into it, then
    `commit_checkpoint` by the main process.)
    """
    tmp = new_checkpoint_folder(run_dir, step)
    try:
        write_model(tmp)
        torch.save(state, tmp / STATE_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return commit_checkpoint(tmp, step, keep)


def new_checkpoint_folder(run_dir: Path, step: int) -> Path:
    """A fresh `checkpoints/step-{step}.tmp-*` folder to write a checkpoint into (invisible to readers until
    `commit_checkpoint` renames it)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"step-{step}.tmp-", dir=root))
    os.chmod(tmp, umask_mode(folder=True))  # the user's umask, not mkdtemp's private 0700
    return tmp


def commit_checkpoint(tmp: Path, step: int, keep: int) -> Path:
    """Rename the written `tmp` folder to `step-{step}` (the commit), then delete all but the newest `keep`."""
    tmp = Path(tmp)
    root, target = tmp.parent, tmp.parent / f"step-{step}"
    try:
        if not (tmp / STATE_NAME).is_file():
            raise FileNotFoundError(f"{tmp}: no {STATE_NAME}; not a complete checkpoint")
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
