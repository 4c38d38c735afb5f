"""The multitask demo learns (issue 16): `rudolph-ft train configs/demo-multitask.yaml` on the demo photos and the
rows `rudolph-ft data demo --tasks` writes, then held out: VQA dish answers accuracy >= 0.9, kcal answers MAE <= half
the always-the-mean baseline's, captioning within 0.05 dish accuracy of the single-task demo's (0.96 on these photos,
README) and its kcal MAE still <= half the baseline's, as the single-task demo's check asks.

Slow (`pytest -m slow`, CI's slow step): the config trains 2,920 steps of 136 positions on a 4 x 128 model (1,168
rows an epoch, 40 epochs), ~11 minutes on an idle 2-core CPU. Measured end to end (issue 16, README table): VQA dish
accuracy 1.00, VQA kcal 0.29x the mean baseline's, captioning 0.964 / 0.26x (seed 42); with seed 1: 0.964, 0.25x,
1.00 / 0.31x (the demo's 6 x 256 model: 0.964, 0.31x, 0.964 / 0.42x in ~30 minutes).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SINGLE_TASK_ACCURACY = 0.96  # configs/demo.yaml on the same 28 held-out photos (tests/test_demo_run.py, README)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rudolph_ft", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.slow
def test_the_multitask_demo_answers_held_out_questions(tmp_path):
    from rudolph_ft.components import load_components
    from rudolph_ft.data.demo_tasks import TASKS_FILE, TASKS_VAL_FILE, VQA_QUESTIONS, score_vqa_answers
    from rudolph_ft.pipelines import answer_batch

    data, run = tmp_path / "demo", tmp_path / "run"
    drawn = _run("data", "demo", "--out", str(data), "--tasks")
    assert drawn.returncode == 0, drawn.stdout + drawn.stderr
    done = _run("train", "configs/demo-multitask.yaml", f"output_dir={run}", f"data.path={data}",
                f"tasks.path={data / TASKS_FILE}", f"tasks.val_path={data / TASKS_VAL_FILE}")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    report = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    assert report["model"]["dish_accuracy"] >= SINGLE_TASK_ACCURACY - 0.05
    assert report["model"]["kcal_mae"] <= 0.5 * report["baseline"]["kcal_mae"]

    rows = [json.loads(line) for line in (data / TASKS_VAL_FILE).read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row["task"] == "vqa"]
    questions = [next(q for q in VQA_QUESTIONS.values() if row["left_text"].endswith(q)) for row in rows]
    components = load_components(run / "final")
    answers = answer_batch(components, [str(data / row["image"]) for row in rows], questions, top_k=1)
    scores = score_vqa_answers(rows, answers)
    print(json.dumps(scores, ensure_ascii=False, indent=2))
    assert scores["dish_questions"] >= 20
    assert scores["dish_accuracy"] >= 0.9
    assert scores["kcal_mae"] <= 0.5 * scores["kcal_mean_baseline_mae"]
