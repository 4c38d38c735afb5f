"""The web demo (`rudolph-ft serve`): a food photo -> dish, kcal, nutrients and the captions they were read from, and a
question about the photo answered (visual QA); zero-shot classification with an editable class list; text to image.

The `*_view` functions do the work and return plain values (testable without gradio or a browser); `build_demo`
lays them out as a Gradio page. Gradio is imported only there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .components import Components
from .pipelines import answer, generate_images, predict_nutrition, zero_shot_classify
from .tasks import FOOD, get_task

__all__ = ["DEFAULT_CLASSES", "nutrition_view", "ask_view", "zero_shot_view", "text_to_image_view", "example_photos",
           "build_demo"]

DEFAULT_CLASSES = "борщ, шаурма, плов, пельмени, салат оливье, блины, паста, суп"
# (field, name on screen, unit): (("protein", "белки", "g"), ..., ("kcal", "ккал", "kcal")), the food task's schema
NUTRIENT_ROWS = tuple((n.field, n.label, n.unit) for n in FOOD.schema.nutrients)


def _value(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:g} {unit}"


def nutrition_view(components: Components, image: Image.Image | None, *, n: int = FOOD.captions_per_photo,
                   seed: int = FOOD.sampling.seed, style: str = FOOD.sampling.style,
                   progress: Callable[[int, int], None] | None = None,
                   ) -> tuple[str, list[list[str]], list[list[Any]]]:
    """Predict nutrients of a photo for display; `progress(done, total)` is called as the captions are sampled.

    Returns:
        (markdown headline with dish and kcal, nutrient table rows [name, value], caption rows
        [rank, score, caption, used]) for the captions ranked best first.

    Raises:
        ValueError: no photo given.
    """
    if image is None:
        raise ValueError("upload a food photo first")
    prediction = predict_nutrition(components, image, n=int(n), seed=int(seed), style=style, progress=progress)
    headline = f"## {prediction.dish or 'dish not recognised'} — {_value(prediction.kcal, 'kcal')}"
    nutrients = [[f"{russian} ({name})", _value(getattr(prediction, name), unit)]
                 for name, russian, unit in NUTRIENT_ROWS]
    captions = [[rank, round(e.score, 3), e.text, "yes" if e.used else ""]
                for rank, e in enumerate(prediction.evidence, start=1)]
    return headline, nutrients, captions


def ask_view(components: Components, image: Image.Image | None, question: str, options: str = "", *,
             seed: int = get_task("vqa").sampling.seed) -> str:
    """Answer a question about the photo (`answer`, visual QA) for display.

    Args:
        options: optional answer options, comma- or newline-separated; the model names one.

    Returns:
        Markdown: the answer, or a note that the model gave none.

    Raises:
        ValueError: no photo or no question given.
    """
    if image is None:
        raise ValueError("upload a food photo first")
    if not question.strip():
        raise ValueError("type a question about the photo, e.g. «какое это блюдо?»")
    choices = [part.strip() for part in options.replace("\n", ",").split(",") if part.strip()] or None
    reply = answer(components, image, question.strip(), choices, seed=int(seed)).strip()
    return f"**{reply}**" if reply else "*the model gave no answer*"


def zero_shot_view(components: Components, image: Image.Image | None, classes: str,
                   template: str = FOOD.class_template, *,
                   style: str = FOOD.sampling.style) -> tuple[dict[str, float], list[list[Any]]]:
    """Zero-shot classes of a photo for display.

    Args:
        classes: comma- or newline-separated class names.

    Returns:
        ({class: probability} for a label widget, rows [class, probability, perplexity] best first).

    Raises:
        ValueError: no photo, no class, or a template without {}.
    """
    if image is None:
        raise ValueError("upload a photo first")
    names = [name.strip() for name in classes.replace("\n", ",").split(",") if name.strip()]
    if not names:
        raise ValueError("write at least one class name, e.g. борщ, шаурма, плов")
    result = zero_shot_classify(components, image, names, template, style=style)
    rows = sorted(([c, round(p, 4), round(q, 3)] for c, p, q in
                   zip(result.classes, result.probabilities, result.perplexities, strict=True)), key=lambda r: r[2])
    return dict(zip(result.classes, result.probabilities, strict=True)), rows


def text_to_image_view(components: Components, text: str, *, n: int = 4, seed: int = 42, rerank: bool = True,
                       style: str = "rc4") -> list[Image.Image]:
    """Images drawn for a text, best first when reranked.

    Raises:
        ValueError: empty text.
    """
    if not text or not text.strip():
        raise ValueError("write what to draw, e.g. борщ со сметаной")
    return generate_images(components, text, int(n), seed=int(seed), rerank=rerank, style=style).images


def example_photos(model: str | os.PathLike | None = None, *, k: int = 6, image_size: int = 128) -> list[str]:
    """A few photos to try the demo on, a different dish each first.

    A training run's validation photos (from its run_config.yaml) when `model` is a run (or its `final/`), else the
    demo set (`data/demo` here, or its copy in the user's cache) when present, else none. A run whose data cannot be
    read any more falls back to the demo set.

    Args:
        model: what the demo serves (a run directory, a model directory, a preset name).
        k: how many photos at most.
        image_size: the model's image side (only used for the data check's notes).
    """
    run_config = _run_config(model)
    records = _validation_records(run_config, image_size) if run_config is not None else []
    if not records:
        from .data import check_data, food_config
        from .data.demo import DEMO_DATA, demo_data_dir

        demo = next((folder for folder in (Path(DEMO_DATA), demo_data_dir()) if (folder / "data.csv").is_file()), None)
        records = check_data(food_config(demo), read_images=False).kept if demo is not None else []
    one_per_dish: dict[str, Any] = {}
    for record in records:
        one_per_dish.setdefault(str(record.meta.get("name", record.image)), record)
    firsts = list(one_per_dish.values())
    chosen = firsts + [record for record in records if all(record is not first for first in firsts)]
    return [str(record.image_path) for record in chosen[:k]]


def _run_config(model: str | os.PathLike | None) -> Path | None:
    """The run_config.yaml of a training run (or of one of its models), else None."""
    from .hub import resolve_model_dir

    if model is None or not Path(model).expanduser().is_dir():
        return None
    try:
        path = resolve_model_dir(model) / "run_config.yaml"
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


def _validation_records(run_config: Path, image_size: int) -> list:
    from .data import DataError
    from .train.config import load_train_config
    from .train.prepare import run_dataset

    try:
        config = load_train_config(run_config, echo=lambda message: None)
        return run_dataset(config.data, image_size).split()[1].records
    except (DataError, OSError, ValueError):  # the run's data moved or changed: show the demo set instead
        return []


def _user_errors(function):
    """Show ValueErrors (things the user can fix) as Gradio error pop-ups."""
    import functools

    import gradio as gr

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    return wrapped


def _example_photos_under(photo, examples: Sequence[str | os.PathLike] | None):
    """Clickable example photos that load into the `photo` input (None when there are none)."""
    import gradio as gr

    photos = [str(path) for path in (example_photos() if examples is None else examples)]
    if not photos:
        return None
    return gr.Examples([[path] for path in photos], inputs=[photo], label="Try one of these photos",
                       elem_id="examples", examples_per_page=len(photos))


def build_demo(components: Components, *, style: str = FOOD.sampling.style, title: str = "rudolph-ft",
               examples: Sequence[str | os.PathLike] | None = None):
    """The Gradio page: tabs "Nutrition", "Zero-shot" and "Text to image" over one loaded model.

    The Nutrition tab opens with `examples`, photos predicted in one click (default: `example_photos()`, the demo
    set when present; `rudolph-ft serve` passes a training run's validation photos).

    Launch with `.launch(server_name="127.0.0.1", server_port=7860)` (what `rudolph-ft serve` does). The page runs
    where `components` were loaded: `load_components(..., device="auto")` picks CUDA, then Apple MPS, then the CPU.
    """
    import gradio as gr

    @_user_errors
    def on_photo(image, n, seed, progress=gr.Progress()):  # noqa: B008 (gradio's way to ask for a progress bar)
        def report(done: int, total: int) -> None:
            progress(done / max(total, 1), desc=f"sampling captions: {done}/{total}")

        return nutrition_view(components, image, n=n, seed=seed, style=style, progress=report)

    @_user_errors
    def on_question(image, question, options, seed):
        return ask_view(components, image, question, options, seed=seed)

    @_user_errors
    def on_classes(image, classes, template):
        return zero_shot_view(components, image, classes, template, style=style)

    @_user_errors
    def on_text(text, n, seed):
        return text_to_image_view(components, text, n=n, seed=seed, style=style)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nRuDOLPH captions a food photo; dish and nutrients are read from its best captions. "
                    f"Running on {components.device}.")
        with gr.Tab("Nutrition"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(type="pil", label="Food photo", sources=["upload", "clipboard"], elem_id="photo",
                                     height=300)  # small photos (the demo's 128 px) keep a readable box
                    shown = _example_photos_under(photo, examples)
                    n = gr.Slider(1, 64, value=FOOD.captions_per_photo, step=1, label="Captions to sample")
                    seed = gr.Number(FOOD.sampling.seed, precision=0, label="Seed")
                    run = gr.Button("Predict", variant="primary")
                with gr.Column():
                    hint = "*Click an example photo on the left, or upload your own.*" if shown is not None else ""
                    headline = gr.Markdown(hint, elem_id="nutrition-headline")
                    nutrients = gr.Dataframe(headers=["nutrient", "value"], label="Nutrients", interactive=False)
            captions = gr.Dataframe(headers=["rank", "score", "caption", "used"], label="Captions (best first, "
                                    "lower score = better)", interactive=False, wrap=True, elem_id="captions")
            run.click(on_photo, [photo, n, seed], [headline, nutrients, captions])
            photo.upload(on_photo, [photo, n, seed], [headline, nutrients, captions])
            if shown is not None:  # a click loads the photo, then predicts with the current captions and seed
                shown.load_input_event.then(on_photo, [photo, n, seed], [headline, nutrients, captions])
            gr.Markdown("### Ask about the photo")
            with gr.Row(equal_height=True):
                question = gr.Textbox("сколько здесь калорий?", label="Question", scale=3, elem_id="question")
                options = gr.Textbox("", label="Answer options (optional, comma-separated)", scale=2)
                ask = gr.Button("Ask", scale=0, min_width=120)
            reply = gr.Markdown(elem_id="answer")
            ask.click(on_question, [photo, question, options, seed], reply)
            question.submit(on_question, [photo, question, options, seed], reply)
        with gr.Tab("Zero-shot"):
            with gr.Row():
                with gr.Column():
                    zs_photo = gr.Image(type="pil", label="Photo", sources=["upload", "clipboard"], elem_id="zs-photo")
                    classes = gr.Textbox(DEFAULT_CLASSES, label="Classes (comma-separated)", lines=2,
                                         elem_id="zs-classes")
                    template = gr.Textbox(FOOD.class_template, label="Template ({} = the class)")
                    classify = gr.Button("Classify", variant="primary")
                with gr.Column():
                    label = gr.Label(num_top_classes=5, label="Most likely", elem_id="zs-label")
                    table = gr.Dataframe(headers=["class", "probability", "perplexity"], interactive=False)
            classify.click(on_classes, [zs_photo, classes, template], [label, table])
        with gr.Tab("Text to image"):
            text = gr.Textbox("борщ со сметаной", label="Text")
            with gr.Row():
                images_n = gr.Slider(1, 16, value=4, step=1, label="Images")
                images_seed = gr.Number(42, precision=0, label="Seed")
            draw = gr.Button("Draw", variant="primary")
            gallery = gr.Gallery(label="Images (best first)", columns=4, elem_id="t2i-gallery")
            draw.click(on_text, [text, images_n, images_seed], gallery)
    return demo
