"""Runs that survive kills, concurrency and stale state, through `rudolph-ft` as a user types it.

A run killed (SIGKILL) inside a save: RUDOLPH_FT_TEST_PAUSE_IN_SAVE=POINT:STEP makes the save of STEP print a line and
sleep at POINT (`write`: the new checkpoint is still `step-N.tmp-*`; `delete`: an old one is renamed `step-N.del-*` but
not yet deleted), and the test kills it there. `rudolph-ft eval --model RUN` and `rudolph-ft train --resume RUN` must
then work, and the resume removes the debris with a note. A run holds a lock on its folder: a second run into it exits
2 naming the holder, and the lock a killed run left is taken over with a note. What a run writes gets the user's umask.
"""

import os
import re
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from test_cli_resume import environment, run, write_small_run  # the resume tests' subprocesses

from rudolph_ft.train.checkpoint import PAUSE_VARIABLE

STEPS = 6  # 2 epochs of 3 batches; a checkpoint at every step, the last 2 kept


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """24 demo photos and run.yaml: the demo config shrunk to seconds, saving every step."""
    return write_small_run(tmp_path_factory.mktemp("run_safety"), epochs=2, checkpoint={"every": 1, "keep": 2})


def start_paused(cwd: Path, output_dir: str, pause: str) -> subprocess.Popen:
    """`rudolph-ft train run.yaml output_dir=...` paused inside a save (`pause` = POINT:STEP), once it says so."""
    process = subprocess.Popen(["rudolph-ft", "train", "run.yaml", f"output_dir={output_dir}"], cwd=cwd,
                               env={**environment(), PAUSE_VARIABLE: pause}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"{PAUSE_VARIABLE}: paused at {pause}"):
            return process
    process.wait(timeout=60)
    raise AssertionError(f"the run never paused at {pause}:\n" + "".join(lines)[-3000:])


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def checkpoint_folders(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def assert_refuses_a_second_run(workdir: Path, name: str, holder: str) -> None:
    """A second `rudolph-ft train` into a folder a live run holds: exit 2 at once, one line naming the holder."""
    second = run(f"rudolph-ft train run.yaml output_dir=runs/{name}", workdir)
    assert second.returncode == 2, (second.stdout + second.stderr)[-3000:]
    assert second.stderr.count("\n") == 1 and holder in second.stderr, second.stderr
    assert "wait for it to end or stop it, or choose another output_dir" in second.stderr


def assert_evaluates_and_resumes(workdir: Path, name: str, newest: str, debris: list[str]) -> str:
    """eval on the killed run uses `newest`; the resume removes `debris` with one note, continues `newest`, ends."""
    done = run(f"rudolph-ft eval --model runs/{name} --captions 1 --no-modality-check", workdir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"using its newest checkpoint runs/{name}/checkpoints/{newest}" in done.stdout

    done = run(f"rudolph-ft train --resume runs/{name}", workdir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    note = (f"removed {len(debris)} unfinished checkpoint folder(s) an interrupted save left in "
            f"runs/{name}/checkpoints: {', '.join(debris)}")
    assert done.stdout.count(note) == 1, done.stdout
    assert f"resuming from runs/{name}/checkpoints/{newest}" in done.stdout
    run_dir = workdir / "runs" / name
    assert checkpoint_folders(run_dir) == [f"step-{STEPS - 1}", f"step-{STEPS}"]  # no debris left
    assert (run_dir / "final" / "model.safetensors").is_file()
    return done.stdout


# every case pays 4 processes of imports (the run, the refused run, eval, the resume): one in the default suite
@pytest.mark.parametrize("pause, newest, left", [
    pytest.param("delete:3", "step-3", r"step-1\.del-\w+", id="between-rename-and-delete"),
    pytest.param("write:3", "step-2", r"step-3\.tmp-\w+", id="in-the-tmp-write", marks=pytest.mark.slow),
])
def test_a_run_killed_inside_a_save_locks_out_others_then_evaluates_resumes_and_loses_its_debris(workdir, pause,
                                                                                                 newest, left):
    name = "kill-" + pause.replace(":", "-")
    first = start_paused(workdir, f"runs/{name}", pause)
    holder = f"PID {first.pid} on host {socket.gethostname()}"
    try:
        assert_refuses_a_second_run(workdir, name, holder)  # while the first holds the folder, sleeping in its save
    finally:
        kill(first)
    folders = checkpoint_folders(workdir / "runs" / name)
    debris = [f for f in folders if re.fullmatch(left, f)]
    assert len(debris) == 1 and len(folders) == 3, folders  # 2 complete checkpoints kept + the debris
    complete = [f for f in folders if re.fullmatch(r"step-\d+", f)]
    assert newest == max(complete, key=lambda f: int(f.removeprefix("step-"))), folders
    # the killed holder's PID stays in the lock file: the resume takes it over, saying whose it was
    assert (workdir / "runs" / name / ".lock").read_text().startswith(f"{first.pid} ")
    output = assert_evaluates_and_resumes(workdir, name, newest, debris)
    assert output.count(f"taking over the stale lock of {holder} (no longer running)") == 1, output
    assert (workdir / "runs" / name / ".lock").read_text() == ""  # released at the end


def test_a_deletion_cut_short_leaves_no_half_deleted_checkpoint_and_readers_skip_debris(tmp_path, monkeypatch):
    """In-process: old checkpoints are renamed to step-N.del-* before deletion; no reader sees .tmp- / .del-."""
    import shutil

    from rudolph_ft.hub import resolve_model_dir
    from rudolph_ft.train import checkpoint

    def write_model(directory):
        (directory / "config.json").write_text("{}")
        (directory / "model.safetensors").write_bytes(b"weights")

    for step in (1, 2):
        checkpoint.save_checkpoint(tmp_path, step, write_model, {"progress": {}}, keep=2)

    def killed_halfway(path, ignore_errors=False):  # what a kill inside rmtree leaves: some files gone
        next(p for p in Path(path).iterdir() if p.is_file()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(tmp_path, 3, write_model, {"progress": {}}, keep=2)
    monkeypatch.undo()
    (tmp_path / "checkpoints" / "step-4.tmp-abc").mkdir()  # a write cut short
    write_model(tmp_path / "checkpoints" / "step-4.tmp-abc")
    folders = checkpoint_folders(tmp_path)
    assert re.fullmatch(r"step-1\.del-\w+", folders[0]) and folders[1:] == ["step-2", "step-3", "step-4.tmp-abc"]
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-3"
    assert resolve_model_dir(tmp_path).name == "step-3"
    notes = []
    checkpoint.remove_debris(tmp_path, echo=notes.append)
    assert checkpoint_folders(tmp_path) == ["step-2", "step-3"] and len(notes) == 1, notes


def test_the_folder_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    from rudolph_ft.io import FolderLock, FolderLockedError

    held = FolderLock(tmp_path / "run").acquire()
    with pytest.raises(FolderLockedError, match=f"PID {os.getpid()} on host {socket.gethostname()}"):
        FolderLock(tmp_path / "run").acquire()  # another open file: refused like another process
    held.release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "run" / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    notes = []
    with FolderLock(tmp_path / "run", echo=notes.append):
        assert (tmp_path / "run" / ".lock").read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    assert notes == [f"{tmp_path / 'run' / '.lock'}: taking over the stale lock of PID {dead.pid} on host "
                     f"{socket.gethostname()} (no longer running)"]


def test_a_run_writes_with_the_users_umask(workdir, tmp_path):
    """Checkpoints, final/, run_config.yaml and eval.json: folders 0o777 & ~umask, files 0o666 & ~umask."""
    previous = os.umask(0o022)
    try:
        done = run(f"rudolph-ft train run.yaml output_dir={tmp_path / 'run'} train.epochs=1 eval.final=true "
                   "eval.captions_per_image=1", workdir)
    finally:
        os.umask(previous)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run_dir = tmp_path / "run"
    folders = [run_dir / "final", *(run_dir / "checkpoints").iterdir()]
    files = [run_dir / "run_config.yaml", run_dir / "eval.json", *(f for d in folders for f in d.rglob("*"))]
    assert (run_dir / "eval.json").is_file() and len(folders) == 3
    for path in folders + files:
        expected = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(stat.S_IMODE(path.stat().st_mode))}"


@pytest.mark.slow
def test_killed_at_many_random_moments_the_run_still_ends_as_an_uninterrupted_one(workdir):
    """SIGKILL at seeded-random moments (inside steps, saves, metrics writes), each time continued with
    `rudolph-ft train --resume RUN`: the run ends with the uninterrupted run's per-step metrics and weights."""
    import random
    import time

    from test_cli_resume import step_metrics

    longer = "train.epochs=8"  # 24 steps, a checkpoint at each: the kills land in steps, saves and deletions
    full = run(f"rudolph-ft train run.yaml output_dir=runs/random-full {longer}", workdir)
    assert full.returncode == 0, (full.stdout + full.stderr)[-3000:]
    delays, kills = random.Random(0), 0
    command = ["rudolph-ft", "train", "run.yaml", "output_dir=runs/random", longer]
    for _ in range(12):  # a bound: each attempt either is killed or finishes
        process = subprocess.Popen(command, cwd=workdir, env=environment(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:  # training has started: kill somewhere in the next steps and saves
            if line.startswith(("checkpoint: ", "trained model:")):
                break
        if kills < 6:
            time.sleep(delays.uniform(0.0, 0.6))
            process.send_signal(signal.SIGKILL)
        output, _ = process.communicate(timeout=900)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, output[-3000:]
        kills += 1
        command = ["rudolph-ft", "train", "--resume", "runs/random"]
    assert process.returncode == 0 and kills >= 3, f"{kills} kills"
    run_dir = workdir / "runs" / "random"
    assert step_metrics(run_dir) == step_metrics(workdir / "runs" / "random-full")
    assert (run_dir / "final" / "model.safetensors").read_bytes() == \
        (workdir / "runs" / "random-full" / "final" / "model.safetensors").read_bytes()
    assert all(re.fullmatch(r"step-\d+", name) for name in checkpoint_folders(run_dir))  # no debris left
