"""A run whose loss turns NaN: `rudolph-ft train ... optim.lr=1e10` as a user types it, and the pieces under it.

At lr 1e10 the first update (OneCycleLR starts at lr / 25 = 4e8) throws the tiny model's weights to ~1e8 and a later
step's loss is NaN. The run must stop with exit code 2 and one error line naming the step, what had blown up and
since which step, and the last checkpoint only if one exists; the NaN step must be in metrics.jsonl / metrics.csv
and the loss curve. `train.nan_policy=skip` logs and skips such steps instead.
"""

import csv
import json
import math
import re
from pathlib import Path

import pytest
import test_cli_resume
from test_cli_resume import run

from rudolph_ft.train.metrics import DivergenceWatch, MetricsLog

demo_workdir = test_cli_resume.workdir  # a fixture: 24 demo photos and the demo config shrunk to seconds
BLOW_UP = "optim.lr=1e10 train.max_steps=6"  # max_steps: a run that failed to blow up ends soon


def nan_run(workdir: Path, name: str, checkpoint_every: int) -> tuple[str, dict]:
    """Run the blow-up through the CLI; the error line and the metrics row of the step it stopped at."""
    done = run(f"rudolph-ft train run.yaml output_dir=runs/{name} {BLOW_UP} checkpoint.every={checkpoint_every}",
               workdir)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    rows = [json.loads(line) for line in (workdir / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, len(rows) + 1))  # every step up to the NaN one
    nan_row = rows[-1]
    assert 2 <= nan_row["step"] <= 6 and math.isnan(nan_row["loss"]), rows
    assert nan_row["non_finite"][0] == "loss" and set(nan_row["non_finite"]) <= {"loss", "l_text_loss", "image_loss",
                                                                                  "r_text_loss"}
    assert all(math.isfinite(row["loss"]) for row in rows[:-1])
    assert errors[0].startswith(f"error: step {nan_row['step']}: loss is nan"), errors[0]  # the step it stopped at
    return errors[0], nan_row


def test_a_nan_stop_without_a_checkpoint_names_the_step_the_blow_up_and_no_checkpoint(demo_workdir):
    error, nan_row = nan_run(demo_workdir, "nan-none", checkpoint_every=1000)
    step = nan_row["step"]
    weights = re.search(r"the weights had blown up: largest \|w\| ([0-9.e+]+) after step (\d+) \(([0-9.e+-]+) at "
                        r"the start; over 100x since step 1\)", error)
    assert weights, error
    assert float(weights[1]) > 1e6 * float(weights[3]) and int(weights[2]) == step - 1
    assert "Lower optim.lr (now 1e+10)" in error
    assert error.endswith("No checkpoint was saved (checkpoint.every=1000)."), error
    run_dir = demo_workdir / "runs" / "nan-none"
    assert not (run_dir / "checkpoints").exists()
    with (run_dir / "metrics.csv").open(newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert last["step"] == str(step) and last["loss"] == "nan"
    assert (run_dir / "loss_curve.png").stat().st_size > 0  # drawn at the stop, NaN step and all


def test_a_nan_stop_names_the_last_checkpoint_and_says_it_is_already_blown_up(demo_workdir):
    error, nan_row = nan_run(demo_workdir, "nan-each", checkpoint_every=1)
    step = nan_row["step"]
    named = re.search(r"The last checkpoint is (\S+) \(step (\d+), largest \|w\| ([0-9.e+]+)\)\. It was saved after "
                      r"the blow-up began at step 1: do not resume it", error)
    assert named, error
    assert named[1] == f"runs/nan-each/checkpoints/step-{step - 1}" and int(named[2]) == step - 1
    assert (demo_workdir / named[1] / "training_state.pt").is_file()  # named only because it exists
    assert float(named[3]) > 1e6


def test_nan_policy_skip_logs_the_skipped_steps_and_finishes(demo_workdir, monkeypatch):
    from rudolph_ft.train.config import load_train_config
    from rudolph_ft.train.loop import Trainer

    monkeypatch.chdir(demo_workdir)
    config = load_train_config(demo_workdir / "run.yaml", ["output_dir=runs/nan-skip", *BLOW_UP.split(),
                                                      "train.max_steps=4", "train.nan_policy=skip"])
    messages = []
    result = Trainer(config, echo=messages.append).run()
    assert result["steps"] == 4 and result["stopped"] is None
    rows = [json.loads(line) for line in Path("runs/nan-skip/metrics.jsonl").read_text().splitlines()]
    skipped = [row["step"] for row in rows if "non_finite" in row]
    assert skipped and skipped[-1] == 4 and [row["step"] for row in rows] == [1, 2, 3, 4]  # one row each
    assert sum("step skipped (train.nan_policy=skip)" in m for m in messages) == len(skipped)
    assert Path("runs/nan-skip/final/model.safetensors").is_file()


def test_the_watch_dates_a_grad_norm_blow_up_from_its_first_step_over_10x_the_median():
    watch = DivergenceWatch(start_weight=1.0)
    for step, grad_norm in enumerate([4.0, 3.0, 2.0, 40.0, 2.5, 3.0, math.inf, 31.0, 300.0, 5e4], start=1):
        watch.observe(step, grad_norm, max_abs_weight=2.0)
    # step 4's spike ended at step 5, inf (an fp16 overflow step) is ignored; the blow-up began at step 8
    assert watch.grad_jump == (8, 3.0) and watch.weight_jump is None and watch.began() == 8
    assert watch.explain() == ("Before it, the gradient norm was exploding: 5e+04 at step 10 (median 3 before; "
                               "over 10x since step 8).")
    watch.observe(11, 2.0, max_abs_weight=150.0)  # the grad norm recovers, the weights blow up
    watch.remember_checkpoint(11)
    assert watch.grad_jump is None and watch.weight_jump == 11 and watch.checkpoint_weights == {11: 150.0}
    assert "largest |w| 150 after step 11 (1 at the start; over 100x since step 11)" in watch.explain()
    assert DivergenceWatch(start_weight=1.0).explain() == ""


def test_metrics_files_and_plot_take_non_finite_steps(tmp_path):
    log = MetricsLog(tmp_path)
    for step, loss in enumerate([5.0, 4.0, float("nan"), float("inf")], start=1):
        log.log({"step": step, "epoch": 0, "loss": loss, "grad_norm": 1.0, "lr": 1e-3, "samples_per_s": 1.0,
                 **({"non_finite": ["loss"]} if not math.isfinite(loss) else {})})
    assert log.plot().stat().st_size > 0
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        assert [row["loss"] for row in csv.DictReader(handle)] == ["5.0", "4.0", "nan", "inf"]
    reread = MetricsLog(tmp_path, truncate_after=3)  # a resume reads the NaN row back
    assert [row["step"] for row in reread.rows] == [1, 2, 3] and math.isnan(reread.rows[-1]["loss"])
    assert reread.rows[-1]["non_finite"] == ["loss"]


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_plot_of_only_non_finite_steps_is_still_drawn(tmp_path, loss):
    log = MetricsLog(tmp_path)
    log.log({"step": 1, "loss": loss, "non_finite": ["loss"]})
    assert log.plot().is_file()
