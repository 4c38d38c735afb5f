"""The web demo's views (plain functions) and its Gradio page; the browser run is in test_app_browser.py."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import ASSETS
from numerics import assert_scalar_close

from rudolph_ft.app import ask_view, example_photos, nutrition_view, text_to_image_view, zero_shot_view
from rudolph_ft.data.images import load_image
from rudolph_ft.data.split import split_items
from rudolph_ft.pipelines import answer

ROOT = Path(__file__).parents[1]

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread

PHOTO = sorted((ASSETS / "images").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def components():
    return bundle.tiny_components(seed=1, scripted=bundle.SCRIPT)


def test_nutrition_view_shows_dish_kcal_nutrients_and_captions(components):
    headline, nutrients, captions = nutrition_view(components, load_image(PHOTO), n=4)
    assert headline == "## борщ — 70 kcal"
    assert nutrients == [["белки (protein)", "3.5 g"], ["жиры (fat)", "4 g"], ["углеводы (carbs)", "6 g"],
                         ["ккал (kcal)", "70 kcal"]]
    assert captions[0][0] == 1 and captions[0][2] == bundle.SCRIPT and captions[0][3] == "yes"
    with pytest.raises(ValueError, match="upload a food photo"):
        nutrition_view(components, None)


def test_nutrition_view_reports_sampling_progress(components):
    calls = []
    nutrition_view(components, load_image(PHOTO), n=4, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= 2 and calls[-1][0] == calls[-1][1]  # ends complete
    assert [done for done, _ in calls] == sorted(done for done, _ in calls) and len({t for _, t in calls}) == 1


def test_ask_view_answers_a_question_about_the_photo(components):
    photo = load_image(PHOTO)
    with pytest.warns(UserWarning, match="no FBC2 task tokens"):
        expected = answer(components, photo, "какое это блюдо?", ["борщ", "плов"], seed=7)
    assert expected  # the scripted model answers with its caption
    assert ask_view(components, photo, "  какое это блюдо? ", "борщ,\nплов, ", seed=7) == f"**{expected}**"
    with pytest.raises(ValueError, match="upload a food photo"):
        ask_view(components, None, "какое это блюдо?")
    with pytest.raises(ValueError, match="type a question"):
        ask_view(components, photo, "  ")


def test_zero_shot_view_parses_the_class_list(components):
    label, rows = zero_shot_view(components, load_image(PHOTO), "плов,\nборщ , шаурма,,")
    assert set(label) == {"плов", "борщ", "шаурма"}
    assert_scalar_close(sum(label.values()), 1.0, reduction=len(label))  # softmax: ~len roundings
    assert rows[0][0] == "борщ" and [r[2] for r in rows] == sorted(r[2] for r in rows)
    with pytest.raises(ValueError, match="at least one class"):
        zero_shot_view(components, load_image(PHOTO), " , ")


def test_text_to_image_view(components):
    images = text_to_image_view(components, "борщ", n=2)
    assert len(images) == 2 and images[0].size == (64, 64)
    with pytest.raises(ValueError, match="what to draw"):
        text_to_image_view(components, "  ")


def test_demo_page_builds_with_three_tabs(components):
    gr = pytest.importorskip("gradio")
    from rudolph_ft.app import build_demo

    demo = build_demo(components, title="test")
    tabs = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert tabs == ["Nutrition", "Zero-shot", "Text to image"]
    ask = [fn for fn in demo.fns.values() if fn.name == "on_question"]  # the Ask button and Enter in the question
    assert len(ask) == 2 and all([block.elem_id for block in fn.outputs] == ["answer"] for fn in ask)


def test_demo_page_opens_with_example_photos_that_predict_in_one_click(components):
    gr = pytest.importorskip("gradio")
    from rudolph_ft.app import build_demo

    demo = build_demo(components, title="test", examples=[PHOTO])
    (examples,) = [block for block in demo.blocks.values() if isinstance(block, gr.Dataset)]
    assert examples.elem_id == "examples" and [s[0]["orig_name"] for s in examples.samples] == [PHOTO.name]
    load = next(fn for fn in demo.fns.values() if fn.name == "load_example")
    assert [block.elem_id for block in load.outputs] == ["photo"]
    predict = [fn for fn in demo.fns.values() if fn.trigger_after == load._id]  # the click then predicts
    assert [fn.name for fn in predict] == ["on_photo"]
    assert {"nutrition-headline", "captions"} <= {block.elem_id for block in predict[0].outputs}


def test_example_photos_are_a_runs_validation_photos_one_dish_each_first(tmp_path, monkeypatch):
    rows = (ROOT / "data" / "demo" / "data.csv").read_text(encoding="utf-8").splitlines()[:41]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    model = tmp_path / "run" / "final"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    data = {"path": str(tmp_path / "data.csv"), "images_root": str(ROOT / "data" / "demo"), "val_fraction": 0.5}
    (model / "run_config.yaml").write_text(json.dumps({"data": data}), encoding="utf-8")  # JSON is YAML

    photos = example_photos(tmp_path / "run", k=4)
    table = [row.split(",") for row in rows[1:]]  # index, belok, fats, uglevod, kkal, name, path
    _, validation = split_items([row[6] for row in table], lambda path: path, 0.5, 0)
    dish = {str(ROOT / "data" / "demo" / row[6]): row[5] for row in table}
    assert len(photos) == 4 and set(photos) <= {str(ROOT / "data" / "demo" / v) for v in validation}
    assert len({dish[p] for p in photos}) == 4  # a different dish each
    assert example_photos(model, k=4) == photos  # the run's final/ model names the same run

    monkeypatch.chdir(ROOT)  # no run: the demo set of the checkout
    demo = example_photos("350M", k=6)
    assert len(demo) == 6 and all(Path(p).is_file() and "data/demo/images" in p for p in demo)
