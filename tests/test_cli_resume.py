"""`rudolph-ft train` interrupted and continued with the command it prints, run as a user types it.

Each run is a `rudolph-ft` subprocess in one folder (the relative paths a user sees) on a small config derived from
configs/demo.yaml. The interrupted run is stopped when it prints a checkpoint line (SIGTERM: it saves and prints the
resume command; SIGKILL: nothing is printed, re-running the original command prints it). `rudolph-ft eval` is run on
the unfinished run, then the printed command verbatim, and the resumed metrics.jsonl must equal an uninterrupted
run's step by step (bitwise on CPU). Every process pays seconds of imports, so the SIGKILL path is `slow` (CI).
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
EPOCHS = 16  # 3 batches each: 48 steps, so a run is far from its end when its first checkpoint (step 8) appears
TIMING = {"samples_per_s"}  # the only per-step metric that may differ between runs


def write_small_run(folder: Path, *, epochs: int, checkpoint: dict, views: int | None = 2) -> Path:
    """`folder` with 24 demo photos in data/ and run.yaml: the demo config shrunk to seconds (2 layers x 32, dropout
    on, 19 training photos in batches of 8: 3 steps an epoch), relative data path, eval off."""
    from rudolph_ft.data.demo import make_demo

    make_demo(folder / "data", n=24, size=64)
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    config["model"]["overrides"].update(num_layers=2, hidden_size=32, num_attention_heads=2)  # dropout stays on
    config["tokenizer"]["train_vocab_size"] = 200
    if views is not None:
        config["vqgan"]["views"] = views
    config["data"] = {"path": "data", "val_fraction": 0.2}
    config["train"].update(epochs=epochs, batch_size=8)
    config["checkpoint"] = checkpoint
    config["eval"] = {"every": 0, "final": False}
    config["logging"] = {"progress": False}
    (folder / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """24 demo photos and run.yaml; a checkpoint every 8 steps (each save also draws loss_curve.png: not too many)."""
    return write_small_run(tmp_path_factory.mktemp("cli_resume"), epochs=EPOCHS, checkpoint={"every": 8, "keep": 2})


def environment() -> dict:
    """This interpreter's `rudolph-ft` first on PATH, one thread per process (as every run here gets)."""
    scripts = Path(sys.executable).parent
    assert (scripts / "rudolph-ft").is_file(), f"no rudolph-ft script next to {sys.executable}: pip install -e ."
    return {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def run(command: str | list[str], cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command) if isinstance(command, str) else command
    return subprocess.run(argv, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=900)


def interrupt_at_first_checkpoint(cwd: Path, output_dir: str, signum: int) -> tuple[int, str]:
    """Start `rudolph-ft train run.yaml output_dir=...`, send `signum` once it prints a (complete) checkpoint."""
    process = subprocess.Popen(["rudolph-ft", "train", "run.yaml", f"output_dir={output_dir}"], cwd=cwd,
                               env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:  # "checkpoint: ..." is printed after the checkpoint folder is renamed into place
        lines.append(line)
        if line.startswith("checkpoint: "):
            process.send_signal(signum)
            break
    rest, _ = process.communicate(timeout=900)
    output = "".join(lines) + rest
    assert "trained model:" not in output, "the run ended before the signal: raise EPOCHS\n" + output[-3000:]
    return process.returncode, output


def newest_checkpoint(run_dir: Path) -> Path:
    """checkpoints/step-N with the largest N (a save cut short would be step-N.tmp-*)."""
    return max((p for p in (run_dir / "checkpoints").iterdir() if re.fullmatch(r"step-\d+", p.name)),
               key=lambda p: int(p.name.removeprefix("step-")))


def assert_eval_uses_the_newest_checkpoint(workdir: Path, name: str) -> None:
    """`rudolph-ft eval --model runs/NAME` of a run without final/: its newest complete checkpoint, said once."""
    assert not (workdir / "runs" / name / "final").exists()
    newest = newest_checkpoint(workdir / "runs" / name).relative_to(workdir)
    done = run(f"rudolph-ft eval --model runs/{name} --captions 1 --no-modality-check", workdir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    notice = f"runs/{name}: no final model yet (unfinished run); using its newest checkpoint {newest}"
    assert done.stdout.count(notice) == 1, done.stdout
    assert "dish accuracy" in done.stdout and "kcal MAE" in done.stdout  # the report


def step_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def uninterrupted(workdir) -> list[dict]:
    done = run("rudolph-ft train run.yaml output_dir=runs/full", workdir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = step_metrics(workdir / "runs" / "full")
    assert [row["step"] for row in metrics] == list(range(1, 3 * EPOCHS + 1))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    return metrics


def assert_continues_the_uninterrupted_run(workdir: Path, name: str, uninterrupted: list[dict]) -> None:
    resumed = step_metrics(workdir / "runs" / name)
    assert [row["step"] for row in resumed] == [row["step"] for row in uninterrupted]  # one row per step
    for ours, theirs in zip(resumed, uninterrupted, strict=True):
        assert ours == theirs, f"step {ours['step']}"  # exact float equality: losses, lr, grad norm
    final = workdir / "runs" / name / "final" / "model.safetensors"
    assert final.read_bytes() == (workdir / "runs" / "full" / "final" / "model.safetensors").read_bytes()


def test_sigterm_then_the_printed_resume_command_continues_the_run_exactly(workdir, uninterrupted):
    code, output = interrupt_at_first_checkpoint(workdir, "runs/term", signal.SIGTERM)
    assert code == 130, output[-3000:]
    printed = re.search(r"received SIGTERM: stopped after step (\d+), checkpoint saved\. Resume with:\n  (.+)\n",
                        output)
    assert printed, output[-3000:]
    assert printed[2] == "rudolph-ft train --resume runs/term"  # what README and the issue show for runs/demo
    assert (workdir / "runs" / "term" / "checkpoints" / f"step-{printed[1]}").is_dir()
    assert (workdir / "runs" / "term" / "run_config.yaml").is_file()
    assert_eval_uses_the_newest_checkpoint(workdir, "term")

    done = run(printed[2], workdir)  # verbatim, from the same folder
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"resuming from runs/term/checkpoints/step-{printed[1]}" in done.stdout
    assert_continues_the_uninterrupted_run(workdir, "term", uninterrupted)


@pytest.mark.slow
def test_sigkill_then_the_command_a_restart_prints_continues_the_run_exactly(workdir, uninterrupted):
    code, output = interrupt_at_first_checkpoint(workdir, "runs/kill", signal.SIGKILL)
    assert code == -signal.SIGKILL, output[-3000:]
    run_dir = workdir / "runs" / "kill"
    assert (run_dir / "run_config.yaml").is_file()  # written when the run started
    assert_eval_uses_the_newest_checkpoint(workdir, "kill")  # any save the kill cut short is not used
    newest = newest_checkpoint(run_dir)

    # the killed run printed nothing; starting it again refuses and prints the command that resumes it
    again = run("rudolph-ft train run.yaml output_dir=runs/kill", workdir)
    assert again.returncode == 2
    printed = re.search(r"resume it with `([^`]+)`", again.stderr)
    assert printed and printed[1] == "rudolph-ft train --resume runs/kill", again.stderr

    done = run(printed[1], workdir)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"resuming from runs/kill/checkpoints/{newest.name}" in done.stdout
    assert_continues_the_uninterrupted_run(workdir, "kill", uninterrupted)


def test_resume_falls_back_to_the_newest_checkpoints_config(tmp_path):
    """A run directory without RUN/run_config.yaml (written by older versions only into checkpoints) resumes."""
    from rudolph_ft.train.loop import _config_to_resume

    run_dir = tmp_path / "run"
    for step in (5, 10):
        (run_dir / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (run_dir / "checkpoints" / f"step-{step}" / "training_state.pt").write_bytes(b"")
        (run_dir / "checkpoints" / f"step-{step}" / "run_config.yaml").write_text("output_dir: run\n")
    (run_dir / "checkpoints" / "step-15.tmp-abc").mkdir()  # an unfinished save is never used
    told = []
    assert _config_to_resume(run_dir, told.append) == run_dir / "checkpoints" / "step-10" / "run_config.yaml"
    assert len(told) == 1 and "run_config.yaml is missing" in told[0]
    (run_dir / "run_config.yaml").write_text("output_dir: run\n")
    assert _config_to_resume(run_dir, told.append) == run_dir / "run_config.yaml" and len(told) == 1
    with pytest.raises(FileNotFoundError, match="is this a rudolph-ft run directory"):
        _config_to_resume(tmp_path / "elsewhere", told.append)


def test_an_unfinished_run_resolves_to_its_newest_complete_checkpoint(tmp_path):
    from rudolph_ft.hub import resolve_model_dir

    run_dir = tmp_path / "run"
    for name in ("step-5", "step-10", "step-15.tmp-k2x9"):  # step-15 was still being saved (or killed doing so)
        (run_dir / "checkpoints" / name).mkdir(parents=True)
        (run_dir / "checkpoints" / name / "config.json").write_text("{}")
    told = []
    assert resolve_model_dir(run_dir, echo=told.append) == run_dir / "checkpoints" / "step-10"
    assert told == [f"{run_dir}: no final model yet (unfinished run); using its newest checkpoint "
                    f"{run_dir / 'checkpoints' / 'step-10'}"]
