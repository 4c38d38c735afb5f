"""The web demo's views (plain functions) and its Gradio page; the browser run is in test_app_browser.py."""

import importlib.util

import pytest
from conftest import ASSETS

from rudolph_ft.app import nutrition_view, text_to_image_view, zero_shot_view
from rudolph_ft.data.images import load_image

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


def test_zero_shot_view_parses_the_class_list(components):
    label, rows = zero_shot_view(components, load_image(PHOTO), "плов,\nборщ , шаурма,,")
    assert set(label) == {"плов", "борщ", "шаурма"} and abs(sum(label.values()) - 1) < 1e-6
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
