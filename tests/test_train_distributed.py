"""The real-model training path on CPU: complete resumable state on every process, the fp16 loss scaler, bf16,
FSDP on 2 gloo processes. (Multi-process runs are `torchrun --standalone` subprocesses, as a user launches them.)"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_train import ROOT, losses, small_data, tiny_config  # noqa: F401  (small_data: a fixture)

from rudolph_ft.train.checkpoint import latest_checkpoint
from rudolph_ft.train.loop import Trainer

WITH_DROPOUT = ["data.val_fraction=0", "tokenizer.bpe_dropout=0.1", "optim.name=adamw", "checkpoint.keep=5"]
# no randomness in the step (dropout, BPE dropout): runs that batch the same data differently take the same steps
NO_DROPOUT = ["data.val_fraction=0", "tokenizer.bpe_dropout=0", "optim.name=adamw",
              "model.overrides={num_layers: 2, hidden_size: 32, num_attention_heads: 2, attention_dropout_prob: 0,"
              " output_dropout_prob: 0}"]


def torchrun(config_path: Path, *args: str, processes: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "rudolph_ft", "train", *args]
    command += [str(config_path)] if config_path is not None else []
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def finish(process: subprocess.Popen, lines: list[str] | None = None) -> str:
    out, _ = process.communicate(timeout=1800)  # a hang guard only
    return "".join(lines or []) + (out or "")


def run_to_end(config_path: Path, *args: str) -> None:
    process = torchrun(config_path, *args)
    output = finish(process)
    assert process.returncode == 0, output[-4000:]


def interrupted_then_resumed(config_path: Path, run_dir: Path, after_step: int) -> str:
    """Start the 2-process run, SIGTERM torchrun once `after_step` steps are logged, then `--resume` it to the end."""
    process = torchrun(config_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    metrics = run_dir / "metrics.jsonl"
    hang_guard = threading.Timer(1800, process.kill)
    hang_guard.start()
    while process.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= after_step):
        time.sleep(0.05)
    assert process.poll() is None, "".join(lines)[-3000:]
    os.killpg(process.pid, signal.SIGTERM)  # Ctrl-C / a scheduler's SIGTERM reaches torchrun and its workers
    process.wait()
    hang_guard.cancel()
    reader.join()
    stopped = "".join(lines)
    assert "Resume with:" in stopped, stopped[-3000:]
    assert latest_checkpoint(run_dir) is not None and not (run_dir / "final").exists()
    printed = stopped.split("Resume with:\n", 1)[1].splitlines()[0].strip()
    assert printed.startswith("torchrun --standalone --nproc_per_node 2 ")
    # the printed command, verbatim (torchrun: the one beside this python)
    resume = subprocess.Popen(printed, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1",
                                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    output = finish(resume)
    assert resume.returncode == 0, output[-4000:]
    return stopped + output


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows if "loss" in row]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_run_interrupted_and_resumed_equals_the_uninterrupted_run(small_data, tmp_path, strategy):  # noqa: F811
    """Per process: the same random streams (dropout, BPE dropout) continue, so losses, weights and each process's
    saved streams equal those of the run that was never stopped, bitwise."""
    extra = [*WITH_DROPOUT, "train.epochs=2", "train.batch_size=4", "checkpoint.every=1",
             f"train.strategy={strategy}"]
    paths = {}
    for name in ("whole", "stopped"):
        config = tiny_config(small_data, tmp_path / name, *extra)
        paths[name] = tmp_path / f"{name}.yaml"
        config.save(paths[name])
    run_to_end(paths["whole"])
    output = interrupted_then_resumed(paths["stopped"], tmp_path / "stopped", after_step=2)
    assert "resuming from" in output
    whole, stopped = metric_rows(tmp_path / "whole"), metric_rows(tmp_path / "stopped")
    assert [r["step"] for r in whole] == list(range(1, 11))
    assert whole == stopped  # every logged value, bitwise
    assert (tmp_path / "whole/final/model.safetensors").read_bytes() == \
        (tmp_path / "stopped/final/model.safetensors").read_bytes()
    for rank in (0, 1):  # each process's streams, and they differ between processes
        a = torch.load(tmp_path / f"whole/checkpoints/step-10/rng-{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / f"stopped/checkpoints/step-10/rng-{rank}.pt", weights_only=True)
        assert torch.equal(a["torch"], b["torch"]) and a["text"] == b["text"] and a["python"] == b["python"]
    zero, one = (torch.load(tmp_path / f"whole/checkpoints/step-10/rng-{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(zero["torch"], one["torch"]) and zero["text"] != one["text"]
    if strategy == "fsdp":  # sharded optimizer state, one file per process; a consolidated model folder
        shards = sorted(p.name for p in (tmp_path / "whole/checkpoints/step-10/optimizer").glob("*.distcp"))
        assert len(shards) == 2


@pytest.mark.parametrize("launch", ["torchrun-ddp", "accelerate-fsdp"])
def test_two_processes_match_one_process_with_the_same_global_batch(small_data, tmp_path, launch):  # noqa: F811
    """2 gloo processes at batch 4 (DDP through torchrun; FSDP, each layer sharded, as the README launches it:
    accelerate's FSDP config, no train.strategy in the run config) vs 1 process at batch 8: the same objective, so
    the same per-step losses (1e-5) and final weights; the consolidated final model loads like any model folder."""
    from rudolph_ft.model import load_model

    common = [*NO_DROPOUT, "train.epochs=1", "checkpoint.every=0"]
    Trainer(tiny_config(small_data, tmp_path / "one", *common, "train.batch_size=8"), echo=lambda m: None).run()
    config = tiny_config(small_data, tmp_path / "two", *common, "train.batch_size=4")
    config.save(tmp_path / "two.yaml")
    if launch == "torchrun-ddp":
        run_to_end(tmp_path / "two.yaml")
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "configs/accelerate/fsdp.yaml"), "--num_processes", "2", "-m", "rudolph_ft", "train",
                   str(tmp_path / "two.yaml")]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=1800)  # a hang guard only
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        shards = list((tmp_path / "two/checkpoints/step-5/optimizer").glob("*.distcp"))
        assert len(shards) == 2  # the optimizer state sharded over the 2 processes
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3, 4, 5]
    for (_, a), (_, b) in zip(one, two, strict=True):
        assert abs(a - b) < 1e-5 * a, (one, two)
    trained, reference = load_model(tmp_path / "two/final"), load_model(tmp_path / "one/final")
    for (name, p), q in zip(trained.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_bf16_autocast_losses_stay_close_to_fp32(small_data, tmp_path):  # noqa: F811
    """A few steps under bf16 autocast (accelerate's CPU autocast) vs fp32: losses within 2e-2; logged in fp32."""
    runs = {}
    for precision in ("no", "bf16"):
        config = tiny_config(small_data, tmp_path / precision, "train.epochs=1", f"train.precision={precision}",
                             "optim.name=adamw", "checkpoint.every=0")
        runs[precision] = seen = []
        Trainer(config, echo=lambda m: None, on_step=lambda t, m, seen=seen: seen.append(m)).run()
    assert len(runs["no"]) == len(runs["bf16"]) == 4
    for fp32, bf16 in zip(runs["no"], runs["bf16"], strict=True):
        for key in ("loss", "l_text_loss", "image_loss", "r_text_loss"):
            assert abs(fp32[key] - bf16[key]) < 2e-2 * fp32[key], (key, fp32[key], bf16[key])
    assert runs["no"][0]["loss"] != runs["bf16"][0]["loss"]  # bf16 really ran


class _ScaledTrainer(Trainer):
    """The fp16 path on the CPU: torch's CPU GradScaler stands in for the CUDA one accelerate makes for fp16."""

    overflow_at: int | None = None

    def _make_accelerator(self):
        accelerator = super()._make_accelerator()
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        return accelerator

    def _clip_gradients(self) -> float:
        if self.progress.step == self.overflow_at:  # an fp16 overflow: an inf in the gradients of this step
            next(p for p in self.model.parameters() if p.grad is not None).grad[0] = float("inf")
        return super()._clip_gradients()


def test_loss_scaler_state_round_trips_and_a_skipped_step_leaves_the_schedule(small_data, tmp_path):  # noqa: F811
    config = tiny_config(small_data, tmp_path / "run", "train.epochs=2", "optim.name=adamw", "checkpoint.every=3")
    trainer = _ScaledTrainer(config, echo=lambda m: None)
    trainer.overflow_at = 2
    lrs = []
    trainer.on_step = lambda t, m: lrs.append((t.optimizer.step_was_skipped, t.scheduler.last_epoch))
    trainer.run()
    # step 2 overflowed: the scaler skipped it and halved its scale; the scheduler did not advance on it
    assert [skipped for skipped, _ in lrs] == [False, True] + [False] * 6
    assert [epoch for _, epoch in lrs] == [1, 1, 2, 3, 4, 5, 6, 7]
    saved = torch.load(tmp_path / "run/checkpoints/step-6/training_state.pt", weights_only=True)
    scale_at_6 = saved["scaler"]["scale"]
    assert scale_at_6 != 2.0**10  # it moved: halved at the overflow, grown since

    # resumed from step 6: the scaler continues from its saved state, not from init_scale
    shutil_rm_after(tmp_path / "run", 6)
    resumed = _ScaledTrainer(config, resume=True, echo=lambda m: None)
    scales = []
    resumed.on_step = lambda t, m: scales.append(t.accelerator.scaler.get_scale())
    resumed.run()
    whole = _ScaledTrainer(tiny_config(small_data, tmp_path / "whole", "train.epochs=2", "optim.name=adamw",
                                       "checkpoint.every=3"), echo=lambda m: None)
    whole.overflow_at = 2
    whole_scales = []
    whole.on_step = lambda t, m: whole_scales.append(t.accelerator.scaler.get_scale())
    whole.run()
    assert scales == whole_scales[6:]
    assert losses(tmp_path / "run") == losses(tmp_path / "whole")


def shutil_rm_after(run_dir: Path, step: int) -> None:
    """Leave the run as a kill right after checkpoint `step` would: later checkpoints and final/ gone."""
    import shutil

    for path in (run_dir / "checkpoints").glob("step-*"):
        if int(path.name.split("-")[1]) > step:
            shutil.rmtree(path)
    shutil.rmtree(run_dir / "final")
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r).get("step", 0) <= step))


def test_grad_accum_steps_and_gradient_checkpointing_keep_the_step(small_data, tmp_path):  # noqa: F811
    """train.grad_accum_steps=2 at batch 4 is the step of batch 8; train.gradient_checkpointing=true recomputes the
    layers in the backward pass (same dropout masks) and gives the same losses."""
    common = [*NO_DROPOUT, "train.epochs=1", "checkpoint.every=0"]
    runs = {}
    for name, extra in {"batch8": ["train.batch_size=8"],
                        "accum": ["train.batch_size=4", "train.grad_accum_steps=2"],
                        "checkpointed": ["train.batch_size=8", "train.gradient_checkpointing=true"]}.items():
        flags = []
        Trainer(tiny_config(small_data, tmp_path / name, *common, *extra), echo=lambda m: None,
                on_step=lambda t, m, flags=flags: flags.append(t.prepared.components.model.gradient_checkpointing)
                ).run()
        runs[name] = losses(tmp_path / name), flags
    batch8, accum, checkpointed = runs["batch8"][0], runs["accum"][0], runs["checkpointed"][0]
    assert [s for s, _ in batch8] == [s for s, _ in accum] == [1, 2, 3, 4, 5]
    for (_, a), (_, b), (_, c) in zip(batch8, accum, checkpointed, strict=True):
        assert abs(a - b) < 1e-5 * a and abs(a - c) < 1e-6 * a
    assert set(runs["checkpointed"][1]) == {True} and set(runs["batch8"][1]) == {False}
