"""Per-step metrics of a run: JSONL + CSV files, a loss-curve PNG, and Weights & Biases when enabled."""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["MetricsLog"]

COLUMNS = ("step", "epoch", "loss", "l_text_loss", "image_loss", "r_text_loss", "lr", "grad_norm", "samples_per_s")


class MetricsLog:
    """Appends one row per logged step to `metrics.jsonl` and `metrics.csv` in the run directory.

    On resume, rows after the checkpoint's step (logged by the interrupted run) are dropped first, so the files
    hold exactly one row per step.
    """

    def __init__(self, run_dir: Path, *, enabled: bool = True, config=None, truncate_after: int = 0) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.jsonl, self.csv = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        self.wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.jsonl.exists():
            self.rows = [r for r in (json.loads(line) for line in self.jsonl.read_text().splitlines() if line)
                         if "step" in r and r["step"] <= truncate_after]
            self._rewrite()
        if config is not None and config.logging.wandb != "off":
            self._start_wandb(config)

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
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        with self.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r for r in self.rows if "loss" in r)

    def log(self, row: dict) -> None:
        """Record one step (training metrics) or one evaluation (keys prefixed `val_`)."""
        if not self.enabled:
            return
        self.rows.append(row)
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if "loss" in row:
            new_file = not self.csv.exists()
            with self.csv.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
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
        ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", linewidth=1)
        val = [(r["step"], r["val_loss"]) for r in self.rows if "val_loss" in r]
        if val:
            ax.plot([s for s, _ in val], [v for _, v in val], "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("weighted loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.run_dir / "loss_curve.png"
        fig.savefig(path)
        plt.close(fig)
        return path
