"""The web demo (`rudolph-ft serve`): a food photo -> dish, kcal, nutrients and the captions they were read from;
zero-shot classification with an editable class list; text to image.

The `*_view` functions do the work and return plain values (testable without gradio or a browser); `build_demo`
lays them out as a Gradio page. Gradio is imported only there.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from .components import Components
from .pipelines import generate_images, predict_nutrition, zero_shot_classify

__all__ = ["DEFAULT_CLASSES", "nutrition_view", "zero_shot_view", "text_to_image_view", "build_demo"]

DEFAULT_CLASSES = "борщ, шаурма, плов, пельмени, салат оливье, блины, паста, суп"
NUTRIENT_ROWS = (("protein", "белки", "g"), ("fat", "жиры", "g"), ("carbs", "углеводы", "g"), ("kcal", "ккал", "kcal"))


def _value(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:g} {unit}"


def nutrition_view(components: Components, image: Image.Image | None, *, n: int = 16, seed: int = 43,
                   style: str = "rc4") -> tuple[str, list[list[str]], list[list[Any]]]:
    """Predict nutrients of a photo for display.

    Returns:
        (markdown headline with dish and kcal, nutrient table rows [name, value], caption rows
        [rank, score, caption, used]) for the captions ranked best first.

    Raises:
        ValueError: no photo given.
    """
    if image is None:
        raise ValueError("upload a food photo first")
    prediction = predict_nutrition(components, image, n=int(n), seed=int(seed), style=style)
    headline = f"## {prediction.dish or 'dish not recognised'} — {_value(prediction.kcal, 'kcal')}"
    nutrients = [[f"{russian} ({name})", _value(getattr(prediction, name), unit)]
                 for name, russian, unit in NUTRIENT_ROWS]
    captions = [[rank, round(e.score, 3), e.text, "yes" if e.used else ""]
                for rank, e in enumerate(prediction.evidence, start=1)]
    return headline, nutrients, captions


def zero_shot_view(components: Components, image: Image.Image | None, classes: str, template: str = "блюдо: {};", *,
                   style: str = "rc4") -> tuple[dict[str, float], list[list[Any]]]:
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


def build_demo(components: Components, *, style: str = "rc4", title: str = "rudolph-ft"):
    """The Gradio page: tabs "Nutrition", "Zero-shot" and "Text to image" over one loaded model.

    Launch with `.launch(server_name="127.0.0.1", server_port=7860)` (what `rudolph-ft serve` does).
    """
    import gradio as gr

    @_user_errors
    def on_photo(image, n, seed):
        return nutrition_view(components, image, n=n, seed=seed, style=style)

    @_user_errors
    def on_classes(image, classes, template):
        return zero_shot_view(components, image, classes, template, style=style)

    @_user_errors
    def on_text(text, n, seed):
        return text_to_image_view(components, text, n=n, seed=seed, style=style)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nRuDOLPH captions a food photo; dish and nutrients are read from its best captions.")
        with gr.Tab("Nutrition"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(type="pil", label="Food photo", sources=["upload", "clipboard"], elem_id="photo")
                    n = gr.Slider(1, 64, value=16, step=1, label="Captions to sample")
                    seed = gr.Number(43, precision=0, label="Seed")
                    run = gr.Button("Predict", variant="primary")
                with gr.Column():
                    headline = gr.Markdown(elem_id="nutrition-headline")
                    nutrients = gr.Dataframe(headers=["nutrient", "value"], label="Nutrients", interactive=False)
            captions = gr.Dataframe(headers=["rank", "score", "caption", "used"], label="Captions (best first, "
                                    "lower score = better)", interactive=False, wrap=True, elem_id="captions")
            run.click(on_photo, [photo, n, seed], [headline, nutrients, captions])
            photo.upload(on_photo, [photo, n, seed], [headline, nutrients, captions])
        with gr.Tab("Zero-shot"):
            with gr.Row():
                with gr.Column():
                    zs_photo = gr.Image(type="pil", label="Photo", sources=["upload", "clipboard"], elem_id="zs-photo")
                    classes = gr.Textbox(DEFAULT_CLASSES, label="Classes (comma-separated)", lines=2,
                                         elem_id="zs-classes")
                    template = gr.Textbox("блюдо: {};", label="Template ({} = the class)")
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
