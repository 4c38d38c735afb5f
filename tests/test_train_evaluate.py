"""Caption-based evaluation: scores, the always-the-mean baseline, the modality check, `rudolph-ft eval`."""

import json

import pytest
from test_train import small_data, tiny_config  # noqa: F401  (fixture re-used)
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.train.evaluate import _baseline_answer, _scores, _targets, format_report
from rudolph_ft.train.loop import Trainer

METAS = [{"meta": {"name": "борщ", "belok": 5.0, "fats": 6.0, "uglevod": 10.0, "kkal": 100.0}},
         {"meta": {"name": "плов", "belok": 9.0, "fats": 14.0, "uglevod": 40.0, "kkal": 300.0}},
         {"meta": {"name": "борщ", "belok": 7.0, "fats": 4.0, "uglevod": 12.0, "kkal": 140.0}}]


def test_scores_against_hand_computed_values():
    targets = [_targets(m) for m in METAS]
    baseline = _baseline_answer(targets)
    assert baseline["dish"] == "борщ" and baseline["kcal"] == pytest.approx((100 + 300 + 140) / 3)
    predictions = [{"dish": "борщ", "kcal": 110.0, "protein": 5.0, "fat": 6.0, "carbs": 10.0},
                   {"dish": "борщ", "kcal": None, "protein": 9.0, "fat": 14.0, "carbs": 40.0},  # kcal missing
                   {"dish": "борщ", "kcal": 140.0, "protein": 7.0, "fat": 4.0, "carbs": 12.0}]
    scores = _scores(predictions, targets, baseline)
    assert scores["dish_accuracy"] == pytest.approx(2 / 3)
    # the missing kcal falls back to the baseline's mean (180): errors 10, 120, 0
    assert scores["kcal_mae"] == pytest.approx((10 + 120 + 0) / 3)
    assert scores["kcal_mae_pct_of_mean"] == pytest.approx(100 * (130 / 3) / 180)
    assert scores["protein_mae"] == 0 and scores["parsed_fraction"] == pytest.approx(2 / 3)
    base = _scores([baseline] * 3, targets, baseline)
    assert base["kcal_mae"] == pytest.approx((80 + 120 + 40) / 3)
    table = format_report({"model": scores, "baseline": base})
    assert "dish accuracy" in table and "0.667" in table


def test_eval_command_on_a_trained_run(small_data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    Trainer(tiny_config(small_data, run, "train.epochs=1"), echo=lambda m: None).run()
    result = CliRunner().invoke(app, ["eval", "--model", str(run), "--captions", "2", "--out",
                                      str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report) >= {"model", "baseline", "images_swapped", "examples"}
    assert report["model"]["n"] == report["baseline"]["n"] == len(report["examples"]) > 0
    assert "kcal MAE" in result.output
