"""Caption rules: the article's template and length rule, custom templates and columns, configuration errors."""

from __future__ import annotations

import pytest

from rudolph_ft.data import ARTICLE_TEMPLATE, CaptionError, CaptionRules, DataConfig

ROW = {"name": "Борщ ", "belok": "7.5", "fats": "9.9", "uglevod": "19.5", "kkal": "186", "path": "a.jpg"}


def test_article_template_lowercases_and_keeps_values_as_written():
    rules = CaptionRules()
    assert rules.template == ARTICLE_TEMPLATE and rules.fields() == ("name", "belok", "fats", "uglevod", "kkal")
    assert rules.render(ROW) == "блюдо: борщ ; белков: 7.5; жиров: 9.9; углеводов: 19.5; ккал: 186;"
    assert CaptionRules(lowercase=False).render(ROW).startswith("блюдо: Борщ")


def test_length_rule_is_exclusive_like_the_article():
    rules = CaptionRules(min_chars=10, max_chars=100)
    assert rules.length_problem("x" * 10)[0] == "caption_too_short"
    assert rules.length_problem("x" * 11) is None and rules.length_problem("x" * 99) is None
    assert rules.length_problem("x" * 100)[0] == "caption_too_long"
    assert CaptionRules(min_chars=None, max_chars=None).length_problem("") is None


def test_custom_template_column_and_literal_words():
    assert CaptionRules(template="{name}: {kkal} ккал").render(ROW) == "борщ : 186 ккал"
    assert CaptionRules(column="name").render(ROW) == "борщ"
    assert CaptionRules().literal_words() == {"блюдо", "белков", "жиров", "углеводов", "ккал"}


@pytest.mark.parametrize("template", ["{}", "{0}", "{name.upper}", "{name", ""])
def test_bad_templates_are_refused_with_a_hint(template):
    with pytest.raises(CaptionError):
        CaptionRules(template=template)


def test_missing_column_names_the_column():
    with pytest.raises(CaptionError, match="'dish'"):
        CaptionRules(template="{dish}").render(ROW)


def test_config_round_trips_through_plain_values():
    config = DataConfig(path="data/demo", caption=CaptionRules(template="{name}", max_chars=50),
                        numeric_columns=("kkal",), val_fraction=0.1)
    values = config.to_dict()
    assert values["caption"]["max_chars"] == 50
    assert DataConfig.from_dict(values) == config
    with pytest.raises(ValueError, match="unknown DataConfig field"):
        DataConfig.from_dict({"path": "x", "image_colum": "file"})
    with pytest.raises(ValueError, match="val_fraction"):
        DataConfig(path="x", val_fraction=1.5)
