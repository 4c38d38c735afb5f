"""Caption-based evaluation: scores, the always-the-mean baseline, the modality check, `rudolph-ft eval`."""

import json
from collections import Counter

import pytest
from PIL import Image
from test_train import small_data, tiny_config  # noqa: F401  (fixture re-used)
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.train.evaluate import NO_DISH, _baseline_answer, _scores, _targets, dish_confusion, format_report
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


def test_confusion_counts_every_labelled_pair():
    examples = [{"target": {"dish": "борщ"}, "predicted": {"dish": "борщ"}},
                {"target": {"dish": "борщ"}, "predicted": {"dish": "плов"}},
                {"target": {"dish": "плов"}, "predicted": {"dish": None}},  # no dish in the captions
                {"target": {"dish": None}, "predicted": {"dish": "плов"}}]  # unlabelled: not counted
    assert dish_confusion(examples) == {"labels": ["борщ", "плов", NO_DISH],
                                        "counts": [[1, 1, 0], [0, 0, 1], [0, 0, 0]]}


def test_many_dishes_fold_into_other_and_both_pictures_are_drawn(tmp_path):
    from rudolph_ft.train.plots import MAX_CONFUSION_LABELS, OTHER, _fold_rare, write_eval_plots

    dishes = [f"суп {i}" for i in range(40)]
    examples = [{"target": {"dish": d, "kcal": 100.0 + 10 * i},
                 "predicted": {"dish": d if i % 3 else (None if i % 2 else dishes[0]), "kcal": 90.0 + 10 * i}}
                for i, d in enumerate(dishes * 2 + dishes[:5])]  # the first five dishes are the most common
    confusion = dish_confusion(examples)
    labels, counts = _fold_rare(confusion["labels"], confusion["counts"])
    assert len(labels) <= MAX_CONFUSION_LABELS and labels[-2:] == [OTHER, NO_DISH]
    assert sum(map(sum, counts)) == len(examples) and set(dishes[:5]) <= set(labels)
    kept = {name: i for i, name in enumerate(confusion["labels"])}
    for i, name in enumerate(labels[:-2]):  # a kept dish keeps its row and its diagonal
        assert counts[i][i] == confusion["counts"][kept[name]][kept[name]]
    report = {"examples": examples, "confusion": confusion, "baseline_answer": {"kcal": 300.0},
              "model": {"kcal_mae": 10.0}, "baseline": {"kcal_mae": 100.0}}
    for path in write_eval_plots(report, tmp_path):
        assert_picture(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "kcal_scatter.png"]


def assert_picture(path, min_side: int = 300, max_side: int = 4000) -> None:
    with Image.open(path) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(path) as image:
        assert image.format == "PNG" and min_side <= min(image.size) and max(image.size) <= max_side, image.size
        grey = image.convert("L")
        assert grey.getextrema()[0] < 80 and len(grey.getcolors(256)) > 20  # something drawn, not a blank page


def check_tables(report: dict) -> None:
    """The confusion matrix and the per-dish table against the per-example (true, predicted) pairs."""
    examples = [e for e in report["examples"] if e["target"]["dish"]]
    labels, counts = report["confusion"]["labels"], report["confusion"]["counts"]
    assert sum(map(sum, counts)) == len(examples) == report["model"]["n"]
    pairs = Counter((e["target"]["dish"], e["predicted"]["dish"] or NO_DISH) for e in examples)
    assert {(labels[i], labels[j]): c for i, row in enumerate(counts) for j, c in enumerate(row) if c} == pairs
    mean_kcal = report["baseline_answer"]["kcal"]
    expected = {}
    for dish in {e["target"]["dish"] for e in examples}:
        mine = [e for e in examples if e["target"]["dish"] == dish]
        errors = [abs((e["predicted"]["kcal"] if e["predicted"]["kcal"] is not None else mean_kcal)
                      - e["target"]["kcal"]) for e in mine]
        expected[dish] = (len(mine), sum(e["predicted"]["dish"] == dish for e in mine) / len(mine),
                          sum(errors) / len(errors))
    table = {row["dish"]: (row["n"], row["dish_accuracy"], row["kcal_mae"]) for row in report["per_dish"]}
    assert table.keys() == expected.keys()
    for dish, (n, accuracy, mae) in expected.items():
        assert table[dish][0] == n and table[dish][1] == pytest.approx(accuracy)
        assert table[dish][2] == pytest.approx(mae)
    assert [row["n"] for row in report["per_dish"]] == sorted((row["n"] for row in report["per_dish"]), reverse=True)


def test_eval_command_on_a_trained_run(small_data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    lines = []
    Trainer(tiny_config(small_data, run, "train.epochs=1", "eval.final=true", "eval.captions_per_image=2"),
            echo=lines.append).run()
    assert (run / "eval.json").is_file()
    for name in ("confusion.png", "kcal_scatter.png"):  # the end of training draws them beside eval.json
        assert f"picture: {run / name}" in lines
        assert_picture(run / name)
    check_tables(json.loads((run / "eval.json").read_text(encoding="utf-8")))

    out = tmp_path / "reports" / "eval.json"
    result = CliRunner().invoke(app, ["eval", "--model", str(run), "--captions", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report) >= {"model", "baseline", "images_swapped", "examples", "confusion", "per_dish"}
    assert report["model"]["n"] == report["baseline"]["n"] == len(report["examples"]) > 0
    check_tables(report)
    for name in ("confusion.png", "kcal_scatter.png"):
        assert f"picture: {out.parent / name}" in result.output
        assert_picture(out.parent / name)
    assert "kcal MAE" in result.output
    top = report["per_dish"][0]  # the per-dish table is printed too
    assert f"{top['dish']}" in result.output and "photos  accuracy  kcal MAE" in result.output

    (run / "confusion.png").unlink()
    result = CliRunner().invoke(app, ["eval", "--model", str(run), "--captions", "1", "--no-modality-check"])
    assert result.exit_code == 0, result.output
    assert f"picture: {run / 'confusion.png'}" in result.output  # no --out: the run's own folder
    assert_picture(run / "confusion.png")


def test_modality_check_swaps_each_photo_with_another_dishs():
    """A held-out table sorted by dish: the swapped photo is of another dish wherever one exists."""
    from rudolph_ft.train.evaluate import _other_dish_partners

    dishes = ["борщ"] * 4 + ["плов"] * 3 + ["паста"] * 2
    partners = _other_dish_partners(dishes)
    assert all(dishes[j] != dishes[i] for i, j in enumerate(partners))
    assert _other_dish_partners(["борщ"] * 3) == [1, 2, 0]  # one dish only: the next photo
