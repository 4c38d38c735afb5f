"""Caption parsing and aggregation (rudolph_ft.pipelines.nutrition): the article's captions and what models garble."""

import pytest

from rudolph_ft.pipelines.nutrition import ParsedCaption, aggregate, format_caption, parse_caption, parse_number


def fields(parsed: ParsedCaption) -> tuple:
    return parsed.dish, parsed.protein, parsed.fat, parsed.carbs, parsed.kcal


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("блюдо: борщ; белков: 3.5; жиров: 4; углеводов: 6; ккал: 70;", ("борщ", 3.5, 4.0, 6.0, 70.0)),
        ("блюдо: салат оливье; белков: 5,5; жиров: 16,2; углеводов: 7,1; ккал: 198,4;",
         ("салат оливье", 5.5, 16.2, 7.1, 198.4)),
        ("Блюдо:  Суп   Харчо ;ккал:120; белков:7", ("суп харчо", 7.0, None, None, 120.0)),  # order, case, spaces
        ("блюдо: плов; белков: ; жиров: много; углеводов: 30", ("плов", None, None, 30.0, None)),  # junk values
        ("блюдо: паста; ккал: 350 ккал; ккал: 10;", ("паста", None, None, None, 350.0)),  # first value wins
        ("блюдо: рис; белки: 2; жиры: 0.3; углеводы: 28; калорийность: 130", ("рис", 2.0, 0.3, 28.0, 130.0)),
        ("dish: pancakes; protein: 6; fat: 9; carbs: 30; kcal: 227", ("pancakes", 6.0, 9.0, 30.0, 227.0)),
        ("омлет, 154 ккал", (None, None, None, None, 154.0)),  # "<number> ккал" without a field name
        ("блюдо: — борщ; белков: -3; ккал: около 90", ("борщ", None, None, None, 90.0)),  # negative refused
        ("блюдо: суп с белков", ("суп с белков", None, None, None, None)),  # a field word inside a name
        ("", (None, None, None, None, None)),
        ("ккал: ;;; блюдо:", (None, None, None, None, None)),
        ("блюдо: котлета; белков: 18; жиров: 12; углеводов: 9; ккал: 2", ("котлета", 18.0, 12.0, 9.0, 2.0)),
    ],
)
def test_parse_caption(caption, expected):
    parsed = parse_caption(caption)
    assert fields(parsed) == expected
    assert parsed.text == caption


def test_parse_caption_cut_off_mid_field():
    parsed = parse_caption("блюдо: борщ; белков: 3; жиров: 4; углев")
    assert fields(parsed) == ("борщ", 3.0, 4.0, None, None)
    assert parsed.found == ("dish", "protein", "fat")


def test_parse_number():
    assert parse_number("около 12,5 г") == 12.5
    assert parse_number("нет") is None
    assert parse_number("-4") is None


def test_format_caption_round_trips():
    caption = format_caption("Борщ", 3.5, 4, 6, 70)
    assert caption == "блюдо: борщ; белков: 3.5; жиров: 4; углеводов: 6; ккал: 70;"
    assert fields(parse_caption(caption)) == ("борщ", 3.5, 4.0, 6.0, 70.0)


def test_aggregate_majority_dish_and_medians():
    parsed = [parse_caption(c) for c in (
        "блюдо: плов; ккал: 400;",  # best-ranked, but outvoted
        "блюдо: борщ; белков: 3; ккал: 70;",
        "блюдо: борщ; ккал: 90; белков: 5",
        "блюдо: борщ; ккал: 60;",
        "блюдо: шаурма; жиров: 20",
    )]
    result = aggregate(parsed)
    assert result["dish"] == "борщ"
    assert result["kcal"] == 70.0 and result["protein"] == 4.0  # medians over the borscht captions
    assert result["fat"] == 20.0  # no borscht caption gives fat: all captions count
    assert result["carbs"] is None


def test_aggregate_ties_go_to_the_better_ranked_dish_and_empty_input():
    parsed = [parse_caption("блюдо: плов; ккал: 400"), parse_caption("блюдо: борщ; ккал: 70")]
    assert aggregate(parsed)["dish"] == "плов"
    assert aggregate([]) == {"dish": None, "protein": None, "fat": None, "carbs": None, "kcal": None}
