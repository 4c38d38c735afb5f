"""The quick-start demo learns: `rudolph-ft train` (configs/demo.yaml, from scratch, ~6 minutes on 2 CPU cores).

Slow: kept out of the default run; CI runs it as its own step (`pytest -m slow`). It trains the real demo end to
end and reads the evaluation the run writes (`eval.json`): held-out dish accuracy >= 0.9, kcal MAE <= half the
always-the-mean baseline's, and the modality check (image tokens swapped between photos) far below the model.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_demo_run_beats_the_baseline_clearly(tmp_path):
    run = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "rudolph_ft", "train", "configs/demo.yaml", f"output_dir={run}"],
                          cwd=ROOT, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    report_start = done.stdout.rfind("evaluation on")
    print(done.stdout[report_start:] if report_start >= 0 else log[-2000:])  # the final report (pytest -s shows it)
    report = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    model, baseline, swapped = report["model"], report["baseline"], report["images_swapped"]
    assert model["n"] >= 20 and model["parsed_fraction"] == 1.0
    assert model["dish_accuracy"] >= 0.9
    assert model["kcal_mae"] <= 0.5 * baseline["kcal_mae"]
    assert swapped["dish_accuracy"] <= 0.5 * model["dish_accuracy"]  # the answer comes from the picture
