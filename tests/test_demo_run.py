"""The quick-start demo learns: `rudolph-ft train` (configs/demo.yaml, from scratch, minutes on 2 CPU cores).

Slow: kept out of the default run; CI runs it as its own step (`pytest -m slow`). It trains the real demo end to
end and reads the evaluation the run writes (`eval.json`): held-out dish accuracy >= 0.9, kcal MAE <= half the
always-the-mean baseline's, and the modality check (image tokens swapped between photos) far below the model.
The same config, unchanged, is also trained on the demo's second style (`rudolph-ft data demo --style bowls`: other
dishes drawn another way, wider portions), a held-out check that the setup was not tuned to the demo's photos (an
expected failure while issue 15 is open).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rudolph_ft", *args], cwd=ROOT, capture_output=True, text=True)


# Issue 15, open: on `bowls` the demo config reaches dish accuracy ~0.6 and kcal MAE ~1.1-1.2x the baseline
# (docs/demo-experiments.md); the case runs, reports, and is expected to fail until a setup meets both styles.
_BOWLS_OPEN = pytest.mark.xfail(reason="issue 15: the demo setup does not yet hold on the bowls style", strict=False)


@pytest.mark.slow
@pytest.mark.parametrize("style", ["closeup", pytest.param("bowls", marks=_BOWLS_OPEN)])
def test_demo_run_beats_the_baseline_clearly(tmp_path, style):
    run = tmp_path / "demo"
    overrides = [f"output_dir={run}"]
    if style != "closeup":  # the checkout's data/demo is the closeup style; draw the other one
        drawn = _run("data", "demo", "--out", str(tmp_path / style), "--style", style)
        assert drawn.returncode == 0, drawn.stdout + drawn.stderr
        overrides.append(f"data.path={tmp_path / style}")
    done = _run("train", "configs/demo.yaml", *overrides)
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
