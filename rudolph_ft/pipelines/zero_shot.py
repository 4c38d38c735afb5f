"""Zero-shot classification: which class name, written as a caption, the model finds most likely for an image.

The reference `zs_clf` (rc4 and rc10) scores each class text `template.format(class)` as the right text after
`[empty left text | image]` by its perplexity (`scoring`), divides the perplexities by their L2 norm and returns
`softmax` of that as `scores`: the predicted class is the one with the *lowest* score. Here the `[left | image]`
prefix runs once and is shared by all classes, and each class text runs only up to its eos.

`probabilities` are `softmax(-ppl / ||ppl||)`: the same numbers with the sign that makes the predicted class the
most probable. Like the reference's scores they are close to uniform by construction (the normalised perplexities
lie in [0, 1]); compare `perplexities` for how clear the choice is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..components import Components
from ..model import RuDolph
from ..tasks import FOOD
from .inputs import ImageInput, image_codes
from .prompts import Prompter
from .scoring import in_eval_mode, prefix_cache, right_text_perplexity

__all__ = ["ZeroShotResult", "zero_shot_classify", "class_perplexities", "reference_scores"]

DEFAULT_TEMPLATE = FOOD.class_template  # "блюдо: {};": how the article's captions name the dish


@dataclass
class ZeroShotResult:
    """Zero-shot scores of one image.

    Attributes:
        classes: the class names, in input order.
        perplexities: of each class text given the image (lower = more likely).
        scores: the reference's `zs_clf` scores, softmax(ppl / ||ppl||) (lower = more likely).
        probabilities: softmax(-ppl / ||ppl||), summing to 1 (higher = more likely).
    """

    classes: list[str]
    perplexities: list[float]
    scores: list[float]
    probabilities: list[float]

    @property
    def index(self) -> int:
        """Position of the predicted class (lowest perplexity)."""
        return min(range(len(self.classes)), key=self.perplexities.__getitem__)

    @property
    def label(self) -> str:
        """The predicted class."""
        return self.classes[self.index]

    def ranked(self) -> list[tuple[str, float]]:
        """(class, probability), most probable first."""
        return sorted(zip(self.classes, self.probabilities, strict=True), key=lambda pair: -pair[1])

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "classes": self.classes, "perplexities": self.perplexities,
                "scores": self.scores, "probabilities": self.probabilities}


def reference_scores(perplexities: torch.Tensor) -> torch.Tensor:
    """`zs_clf`'s scores: softmax over the class perplexities divided by their L2 norm (lowest = predicted)."""
    return (perplexities / perplexities.norm(dim=0, keepdim=True)).softmax(0)


@torch.inference_mode()
def class_perplexities(model: RuDolph, prompter: Prompter, codes: torch.Tensor, texts: Sequence[str],
                       batch_size: int = 16) -> torch.Tensor:
    """Perplexity of each class text as right text given one image's codes (image_seq_length,)."""
    prefix = torch.cat([prompter.empty_left().to(codes.device), codes])[None]  # (1, l + image)
    right = torch.stack([prompter.right_text(t) for t in texts]).to(codes.device)
    shared, _ = prefix_cache(model, prefix)  # runs once for all classes
    perplexities = []
    for start in range(0, len(texts), batch_size):
        chunk = right[start:start + batch_size]
        rows = torch.zeros(len(chunk), dtype=torch.long)  # every class continues the one cached prefix
        perplexities.append(right_text_perplexity(model, shared.fork(rows), chunk, prompter))
    return torch.cat(perplexities).cpu()


@in_eval_mode
def zero_shot_classify(components: Components, image: ImageInput, classes: Sequence[str],
                       template: str = DEFAULT_TEMPLATE, *, style: str = "rc4", batch_size: int = 16) -> ZeroShotResult:
    """Classify an image among `classes` without training, by the perplexity of `template.format(class)`.

    Args:
        components: model, tokenizer and VQGAN.
        image: a path, PIL image or (3, H, W) tensor.
        classes: class names, e.g. ["борщ", "шаурма", "плов"].
        template: how a class becomes a caption (the reference's default is "{}"; the default here is how the
            article's captions name the dish, so a model fine-tuned on them reads the class as it learned it).
        style: "rc4" (the article's `zs_clf`) or "rc10" (`ruDolphApi.zs_clf`, task tokens).
        batch_size: classes per forward pass.
    """
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("zero-shot classification needs at least one class name")
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' where the class name goes")
    model = components.model
    prompter = Prompter(model.config, components.tokenizer, style)
    codes = image_codes(components, [image])[0]
    ppl = class_perplexities(model, prompter, codes, [template.format(c) for c in classes], batch_size)
    normalised = ppl / ppl.norm(dim=0, keepdim=True)
    return ZeroShotResult(classes, ppl.tolist(), reference_scores(ppl).tolist(), (-normalised).softmax(0).tolist())
