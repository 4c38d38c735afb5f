"""Dish and nutrients of a food photo: sample captions, rerank them by the image, parse and agree on the best ones."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..components import Components
from ..tasks import FOOD
from .captions import CaptionSamples, generate_captions_batch
from .inputs import ImageInput
from .nutrition import NUTRIENTS, ParsedCaption, aggregate, parse_caption
from .rerank import rerank_by_image

__all__ = ["CaptionEvidence", "NutritionPrediction", "predict_nutrition", "predict_nutrition_batch"]


@dataclass
class CaptionEvidence:
    """One sampled caption behind a prediction.

    Attributes:
        text: the caption; count: how often it was sampled.
        score, text_perplexity, image_perplexity: its `rerank_by_image` result (lower score = better).
        parsed: what `parse_caption` read from it.
        used: whether it is among the best captions the answer was taken from.
    """

    text: str
    count: int
    score: float
    text_perplexity: float
    image_perplexity: float
    parsed: ParsedCaption
    used: bool

    def to_dict(self) -> dict:
        fields = {name: getattr(self.parsed, name) for name in ("dish", *NUTRIENTS)}
        return {"text": self.text, "count": self.count, "score": self.score, "text_perplexity": self.text_perplexity,
                "image_perplexity": self.image_perplexity, "used": self.used, "parsed": fields}


@dataclass
class NutritionPrediction:
    """The answer for one photo, with the captions it came from (best first).

    Attributes:
        dish: majority dish of the best captions; protein, fat, carbs (g), kcal: their medians (None: not found).
        evidence: every distinct sampled caption, ranked.
        image: a name for the photo (its path when given one).
    """

    dish: str | None
    protein: float | None
    fat: float | None
    carbs: float | None
    kcal: float | None
    evidence: list[CaptionEvidence] = field(default_factory=list)
    image: str | None = None

    @property
    def captions(self) -> list[str]:
        """The ranked captions, best first."""
        return [e.text for e in self.evidence]

    def to_dict(self) -> dict:
        return {"image": self.image, "dish": self.dish, "protein": self.protein, "fat": self.fat,
                "carbs": self.carbs, "kcal": self.kcal, "evidence": [e.to_dict() for e in self.evidence]}

    def summary(self) -> str:
        """One line: dish, kcal and nutrients."""
        def show(value: float | None, unit: str) -> str:
            return "?" if value is None else f"{value:g}{unit}"

        return (f"{self.dish or '?'}: {show(self.kcal, ' kcal')}, protein {show(self.protein, ' g')}, "
                f"fat {show(self.fat, ' g')}, carbs {show(self.carbs, ' g')}")


def _predict_from_samples(components: Components, image: ImageInput, samples: CaptionSamples, best: int, style: str,
                          batch_size: int) -> NutritionPrediction:
    counts = samples.counts()
    ranked = rerank_by_image(components, list(counts), samples.codes, style=style, batch_size=batch_size)
    evidence = [CaptionEvidence(r.text, counts[r.text], r.score, r.text_perplexity, r.image_perplexity,
                                parse_caption(r.text), used=i < best) for i, r in enumerate(ranked)]
    answer = aggregate([e.parsed for e in evidence if e.used])
    name = str(image) if isinstance(image, (str, os.PathLike)) else None
    return NutritionPrediction(**answer, evidence=evidence, image=name)


def predict_nutrition_batch(
    components: Components,
    images: Sequence[ImageInput],
    *,
    template: str = FOOD.prompt,
    n: int = FOOD.captions_per_photo,
    best: int = FOOD.best,
    top_k: int = FOOD.sampling.top_k,
    top_p: float = FOOD.sampling.top_p,
    temperature: float = FOOD.sampling.temperature,
    seed: int | None = FOOD.sampling.seed,
    batch_size: int = 16,
    style: str = FOOD.sampling.style,
    progress: Callable[[int, int], None] | None = None,
) -> list[NutritionPrediction]:
    """`predict_nutrition` for several photos; their captions are sampled in shared batches (`progress(done,
    total)` is told after each decoding step, see `generate_captions_batch`)."""
    if best < 1:
        raise ValueError(f"best must be >= 1 (captions to take the answer from), got {best}")
    all_samples = generate_captions_batch(components, images, template, n, top_k=top_k, top_p=top_p,
                                          temperature=temperature, seed=seed, batch_size=batch_size, style=style,
                                          progress=progress)
    return [_predict_from_samples(components, image, samples, best, style, batch_size)
            for image, samples in zip(images, all_samples, strict=True)]


def predict_nutrition(components: Components, image: ImageInput, **options) -> NutritionPrediction:
    """Dish, kcal and nutrients of a food photo, with the captions they were read from.

    Samples `n` captions starting with `template` (the article's sampling settings), reranks the distinct ones by
    how well they explain the photo (`rerank_by_image`), parses the `best` of them (`parse_caption`) and agrees on
    the answer: the majority dish and the median of each nutrient (`aggregate`).

    Args:
        components: model, tokenizer and VQGAN of a model fine-tuned on captions like the article's.
        image: a path, PIL image or (3, H, W) tensor.
        **options: template="блюдо:", n=16, best=4, top_k=16, top_p=0.6, temperature=0.8, seed=43,
            batch_size=16, style="rc4", progress=None (see `predict_nutrition_batch`; the defaults are the food
            task's, `rudolph_ft.tasks.FOOD`).
    """
    return predict_nutrition_batch(components, [image], **options)[0]
