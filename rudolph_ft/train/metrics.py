"""Per-step metrics of a run: JSONL + CSV files, a loss-curve PNG, and Weights & Biases when enabled; and
`DivergenceWatch`, which notices the weights or the grad norm blowing up before a NaN loss."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..io import atomic_write

__all__ = ["MetricsLog", "DivergenceWatch", "COLUMNS", "TASK_LOSS_PREFIX", "VAL_TASK_LOSS_PREFIX"]

COLUMNS = ("step", "epoch", "loss", "l_text_loss", "image_loss", "r_text_loss", "lr", "grad_norm", "samples_per_s")
TASK_LOSS_PREFIX = "task_loss/"  # metrics keys of a multitask run's per-task weighted losses: metrics.csv columns too
VAL_TASK_LOSS_PREFIX = "val_task_loss/"  # ... and of its per-task losses on tasks.val_path (validation rows: jsonl)


class MetricsLog:
    """Appends one row per logged step to `metrics.jsonl` and `metrics.csv` in the run directory.

    metrics.csv has the `COLUMNS`, then (a multitask run) one `task_loss/<task>` column per task logged so far, in
    name order, empty at the steps whose batches held none of that task's rows; a task's first value rewrites the
    file with its column. On resume, rows after the checkpoint's step (logged by the interrupted run) are dropped
    first, so the files hold exactly one row per step.
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True, config=None, truncate_after: int = 0,
                 echo: Callable[[str], None] = print) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.jsonl, self.csv = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        self.columns: list[str] = list(COLUMNS)  # metrics.csv's header
        self.wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.jsonl.exists():
            self.rows = [r for r in self._read_rows(echo) if "step" in r and r["step"] <= truncate_after]
            self._rewrite()
        if config is not None and config.logging.wandb != "off":
            self._start_wandb(config)

    def _read_rows(self, echo: Callable[[str], None]) -> list[dict]:
        """The rows of metrics.jsonl; a cut-off last line (a kill mid-write) is dropped with a note."""
        lines = self.jsonl.read_text(encoding="utf-8").splitlines()
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number < len(lines):
                    raise ValueError(f"{self.jsonl}, line {number}: not valid JSON ({error}); delete that line (or the "
                                     "file: it holds only the logged metrics) and resume again") from None
                echo(f"note: {self.jsonl}: dropped its cut-off last line (the run was stopped while writing it)")
        return rows

    def _start_wandb(self, config) -> None:
        try:
            import wandb
        except ImportError as error:
            raise ImportError("logging.wandb is on but wandb is not installed: pip install wandb "
                              "(or set logging.wandb=off)") from error
        self.wandb = wandb.init(project=config.logging.wandb_project, mode=config.logging.wandb,
                                dir=str(self.run_dir), config=config.to_dict(), resume="allow",
                                name=self.run_dir.name)

    def _rewrite(self) -> None:
        """Both files anew from `self.rows`, each atomically: a kill here leaves the old file, never a cut one."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)
        atomic_write(self.jsonl, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

        self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        """metrics.csv anew (atomically) from `self.rows`, with a column for every task loss in them."""
        tasks = {key for row in self.rows if "loss" in row for key in row if key.startswith(TASK_LOSS_PREFIX)}
        self.columns = [*COLUMNS, *sorted(tasks)]

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(r for r in self.rows if "loss" in r)

        atomic_write(self.csv, write_csv)

    def log(self, row: dict) -> None:
        """Record one step (training metrics) or one evaluation (keys prefixed `val_`)."""
        if not self.enabled:
            return
        self.rows.append(row)
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if "loss" in row and any(key.startswith(TASK_LOSS_PREFIX) and key not in self.columns for key in row):
            self._rewrite_csv()  # a task's first loss: the file again, with its column
        elif "loss" in row:
            new_file = not self.csv.exists()
            with self.csv.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
                if new_file:
                    writer.writeheader()
                writer.writerow(row)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row.get("step"))

    def losses(self) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in self.rows if "loss" in r]

    def plot(self) -> Path | None:
        """Write `loss_curve.png`: training loss per step (and validation loss where evaluated)."""
        if not self.enabled or not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        train = self.losses()
        finite = [(s, v) for s, v in train if math.isfinite(v)]
        ax.plot([s for s, _ in finite], [v for _, v in finite], label="train loss", linewidth=1)
        for i, step in enumerate(s for s, v in train if not math.isfinite(v)):  # a NaN/inf step: a red line
            ax.axvline(step, color="tab:red", linestyle="--", linewidth=1, label=None if i else "non-finite loss")
        val = [(r["step"], r["val_loss"]) for r in self.rows if "val_loss" in r]
        if val:
            ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("weighted loss")
        if any(v > 0 for _, v in finite):  # (a run whose only steps were NaN has nothing to put on a log scale)
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.run_dir / "loss_curve.png"
        fig.savefig(path)
        plt.close(fig)
        return path


GRAD_JUMP = 10.0  # a grad norm above this many times the running median of the steps before it: exploding
WEIGHT_JUMP = 100.0  # the largest trainable |w| above this many times its value when the run started: blown up
MEDIAN_WINDOW = 100  # the running median is over this many recent healthy steps


class DivergenceWatch:
    """Notices the weights or the gradient norm blowing up, which usually comes before a non-finite loss.

    `observe` is fed every finite step; `explain()` says what had blown up and since which step, for the message
    that stops the run. A grad-norm blow-up starts at the first step whose (pre-clipping) grad norm exceeds
    GRAD_JUMP x the running median of the healthy steps before it and lasts while later steps stay above that
    bound; a weight blow-up starts at the first step whose largest trainable |w| exceeds WEIGHT_JUMP x its value
    at the start of the run.

    Args:
        start_weight: the largest trainable |w| before the first step (of this process: a resumed run starts from
            its checkpoint).
    """

    def __init__(self, start_weight: float) -> None:
        self.start_weight = start_weight
        self.healthy_grad_norms: deque[float] = deque(maxlen=MEDIAN_WINDOW)
        self.last: tuple[int, float, float] | None = None  # (step, grad norm, largest |w|) of the last finite step
        self.grad_jump: tuple[int, float] | None = None  # (first step, the running median before it)
        self.weight_jump: int | None = None  # first step of the weight blow-up
        self.checkpoint_weights: dict[int, float] = {}  # step -> largest |w| of the checkpoint saved there

    def observe(self, step: int, grad_norm: float, max_abs_weight: float) -> None:
        """Record a finite step: its grad norm before clipping and the largest |w| after its update."""
        self.last = (step, grad_norm, max_abs_weight)
        if math.isfinite(grad_norm):  # inf: an fp16 overflow the grad scaler skips, not a blow-up
            healthy = self.healthy_grad_norms
            median = self.grad_jump[1] if self.grad_jump else statistics.median(healthy) if healthy else None
            if median is not None and grad_norm > GRAD_JUMP * median:
                self.grad_jump = self.grad_jump or (step, median)
            else:
                self.grad_jump = None
                self.healthy_grad_norms.append(grad_norm)
        blown = not max_abs_weight <= WEIGHT_JUMP * self.start_weight  # NaN weights count as blown up
        self.weight_jump = (step if self.weight_jump is None else self.weight_jump) if blown else None

    def remember_checkpoint(self, step: int) -> None:
        """The checkpoint saved after `step` holds the weights last observed (if `step` was observed)."""
        if self.last is not None and self.last[0] == step:
            self.checkpoint_weights[step] = self.last[2]

    def began(self) -> int | None:
        """The step the current blow-up began at (the earlier of weights and grad norm), None if there is none."""
        starts = [s for s in (self.weight_jump, self.grad_jump[0] if self.grad_jump else None) if s is not None]
        return min(starts) if starts else None

    def explain(self) -> str:
        """A sentence on what was blowing up before now, and since which step; "" if nothing was."""
        if self.last is None:
            return ""
        step, grad_norm, weight = self.last
        parts = []
        if self.weight_jump is not None:
            parts.append(f"the weights had blown up: largest |w| {weight:.3g} after step {step} "
                         f"({self.start_weight:.3g} at the start; over {WEIGHT_JUMP:g}x since step {self.weight_jump})")
        if self.grad_jump is not None:
            first, median = self.grad_jump
            parts.append(f"the gradient norm was exploding: {grad_norm:.3g} at step {step} (median {median:.3g} "
                         f"before; over {GRAD_JUMP:g}x since step {first})")
        return ("Before it, " + "; ".join(parts) + ".") if parts else ""
