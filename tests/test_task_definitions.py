"""Tasks as data (issue 16 §4): the food task's schema, prompt and sampling live in `rudolph_ft.tasks`, and the
pipelines, the CLI, the web demo, the data code and the training loop read them from there."""

from __future__ import annotations

import inspect
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rudolph_ft import cli
from rudolph_ft.app import NUTRIENT_ROWS, ask_view, build_demo, nutrition_view, zero_shot_view
from rudolph_ft.data import ARTICLE_COLUMNS, ARTICLE_TEMPLATE, NUTRIENT_COLUMNS, CaptionRules, food_config
from rudolph_ft.pipelines import generate_captions, generate_captions_batch, predict_nutrition_batch
from rudolph_ft.pipelines.captions import sample_caption_ids
from rudolph_ft.pipelines.nutrition import NUTRIENTS, format_caption, parse_caption
from rudolph_ft.pipelines.tasks import ANSWER_SAMPLING, answer_batch
from rudolph_ft.pipelines.zero_shot import DEFAULT_TEMPLATE, zero_shot_classify
from rudolph_ft.tasks import BASELINE_SAMPLING, CAPTION_SAMPLING, FOOD, FOOD_SCHEMA, TASKS, run_task
from rudolph_ft.train import evaluate
from rudolph_ft.train.config import EvalSection
from rudolph_ft.train.loop import Trainer


def _defaults(function) -> dict:
    """Parameter defaults of a function (a typer command's: its options' defaults)."""
    values = {}
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default
        values[name] = getattr(default, "default", default)
    return values


def test_food_schema_is_the_articles():
    assert FOOD_SCHEMA.template == "блюдо: {name}; белков: {belok}; жиров: {fats}; углеводов: {uglevod}; ккал: {kkal};"
    assert FOOD_SCHEMA.columns == ("index", "belok", "fats", "uglevod", "kkal", "name", "path")
    assert FOOD_SCHEMA.fields == ("protein", "fat", "carbs", "kcal")
    assert FOOD.metric_columns == {"kcal": "kkal", "protein": "belok", "fat": "fats", "carbs": "uglevod"}
    assert (FOOD.prompt, FOOD.class_template) == ("блюдо:", "блюдо: {};")
    assert FOOD_SCHEMA.template.startswith(FOOD.prompt)
    assert CAPTION_SAMPLING == FOOD.sampling
    assert (FOOD.sampling.top_k, FOOD.sampling.top_p, FOOD.sampling.temperature, FOOD.sampling.seed,
            FOOD.sampling.style) == (16, 0.6, 0.8, 43, "rc4")
    assert (BASELINE_SAMPLING.top_k, BASELINE_SAMPLING.top_p, BASELINE_SAMPLING.temperature) == (32, 0.8, 1.0)
    assert all(task.sampling is BASELINE_SAMPLING for task in TASKS.values())


def test_data_and_parser_read_the_schema():
    assert ARTICLE_TEMPLATE == FOOD_SCHEMA.template and CaptionRules().template == FOOD_SCHEMA.template
    assert ARTICLE_COLUMNS == FOOD_SCHEMA.columns and NUTRIENT_COLUMNS == FOOD_SCHEMA.nutrient_columns
    config = food_config("data.csv")
    assert (config.image_column, config.label_column, config.required_columns) == ("path", "name", ("name",))
    assert NUTRIENTS == FOOD_SCHEMA.fields and evaluate.NUTRIENTS == FOOD.metric_columns
    caption = format_caption("Борщ", 3.5, 4, 6, 70)
    assert caption == "блюдо: борщ; белков: 3.5; жиров: 4; углеводов: 6; ккал: 70;"
    assert caption == CaptionRules().render({"name": "Борщ", "belok": "3.5", "fats": "4", "uglevod": "6",
                                             "kkal": "70"})
    parsed = FOOD.parse(caption)
    assert parsed == parse_caption(caption) and (parsed.dish, parsed.kcal) == ("борщ", 70.0)
    assert [(field, label, unit) for field, label, unit in NUTRIENT_ROWS] == [
        ("protein", "белки", "g"), ("fat", "жиры", "g"), ("carbs", "углеводы", "g"), ("kcal", "ккал", "kcal")]


@pytest.mark.parametrize("function", [generate_captions, generate_captions_batch, predict_nutrition_batch,
                                      cli.caption, cli.predict])
def test_caption_sampling_defaults_come_from_the_food_task(function):
    defaults = _defaults(function)
    sampling = FOOD.sampling
    assert (defaults["top_k"], defaults["top_p"], defaults["temperature"], defaults["seed"]) == \
        (sampling.top_k, sampling.top_p, sampling.temperature, sampling.seed)
    assert defaults["template"] == FOOD.prompt
    if "style" in defaults and not function.__module__.endswith("cli"):  # the CLI's --style is "auto"
        assert defaults["style"] == sampling.style


def test_other_defaults_come_from_the_task_definitions():
    assert _defaults(sample_caption_ids)["seed"] == FOOD.sampling.seed
    predict = _defaults(predict_nutrition_batch)
    assert (predict["n"], predict["best"]) == (FOOD.captions_per_photo, FOOD.best)
    assert (_defaults(cli.predict)["n"], _defaults(cli.predict)["best"]) == (FOOD.captions_per_photo, FOOD.best)
    assert _defaults(cli.classify)["template"] == FOOD.class_template == DEFAULT_TEMPLATE
    assert _defaults(zero_shot_classify)["template"] == FOOD.class_template
    assert _defaults(cli.eval_command)["seed"] == FOOD.sampling.seed
    ev = _defaults(evaluate.evaluate_predictions)
    assert (ev["seed"], ev["template"], ev["best"]) == (FOOD.sampling.seed, FOOD.prompt, FOOD.best)
    assert EvalSection().template == FOOD.prompt
    view = _defaults(nutrition_view)
    assert (view["n"], view["seed"], view["style"]) == (FOOD.captions_per_photo, FOOD.sampling.seed,
                                                         FOOD.sampling.style)
    assert _defaults(zero_shot_view)["template"] == FOOD.class_template
    assert _defaults(build_demo)["style"] == FOOD.sampling.style
    assert _defaults(ask_view)["seed"] == TASKS["vqa"].sampling.seed
    answer = _defaults(answer_batch)
    assert (answer["top_k"], answer["top_p"], answer["temperature"], answer["seed"]) == \
        (BASELINE_SAMPLING.top_k, BASELINE_SAMPLING.top_p, BASELINE_SAMPLING.temperature, BASELINE_SAMPLING.seed)
    assert ANSWER_SAMPLING == BASELINE_SAMPLING.settings()
    ask = _defaults(cli.ask)
    assert ask["seed"] == BASELINE_SAMPLING.seed


def test_the_loop_evaluates_through_the_runs_task(monkeypatch):
    assert run_task(None) is FOOD
    assert Trainer.task.fget(SimpleNamespace(config=None)) is FOOD

    calls = []

    class Recorder:
        def evaluate_run(self, trainer, final):
            calls.append((trainer, final))
            return {"step": 3}

    monkeypatch.setattr("rudolph_ft.tasks.run_task", lambda config: Recorder())
    model = SimpleNamespace(train=lambda: calls.append("train"))
    trainer = SimpleNamespace(config=None, model=model)
    trainer.task = Trainer.task.fget(trainer)
    assert Trainer._evaluate(trainer, final=True) == {"step": 3}
    assert calls == [(trainer, True), "train"]

    seen = []
    monkeypatch.setattr(evaluate, "evaluate_during_training", lambda trainer, final: seen.append(final) or {})
    assert FOOD.evaluate_run(trainer, final=False) == {} and seen == [False]


def test_the_cli_reads_its_defaults_without_torch():
    code = "import sys, rudolph_ft.cli, rudolph_ft.tasks; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
