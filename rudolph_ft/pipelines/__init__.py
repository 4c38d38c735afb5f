"""What users do with a (fine-tuned) RuDOLPH: caption a photo, rerank, classify zero-shot, draw, predict nutrients,
and the FBC2 tasks (`answer`: visual QA, `answer_text`: text / math QA, `read_text`, `continue_text`).

Every function takes a `Components` (model + tokenizer + VQGAN, see `rudolph_ft.components.load_components`)
first; images may be paths, PIL images or (3, H, W) tensors in [0, 1]. Prompts and scores follow the reference
`rudolph` pipelines (`style="rc4"`, the article's API, or `"rc10"`, see `prompts`).

    >>> from rudolph_ft.components import load_components
    >>> from rudolph_ft.pipelines import generate_captions, predict_nutrition
    >>> components = load_components("runs/food")
    >>> generate_captions(components, "borscht.jpg", n=4)
    >>> predict_nutrition(components, "borscht.jpg").summary()
"""

from .captions import CaptionSamples, generate_captions, generate_captions_batch
from .inputs import ImageInput, image_codes
from .nutrition import ParsedCaption, aggregate, format_caption, parse_caption
from .predict import CaptionEvidence, NutritionPrediction, predict_nutrition, predict_nutrition_batch
from .prompts import STYLES, Prompter
from .rerank import RankedCaption, RankedImage, rerank_by_image, rerank_by_text
from .sampling import SamplingSettings
from .tasks import (
    answer,
    answer_batch,
    answer_text,
    answer_text_batch,
    continue_text,
    continue_text_batch,
    read_text,
    read_text_batch,
)
from .text_to_image import GeneratedImages, generate_images, image_grid
from .zero_shot import ZeroShotResult, zero_shot_classify

__all__ = [
    "STYLES", "Prompter", "SamplingSettings", "ImageInput", "image_codes",
    "CaptionSamples", "generate_captions", "generate_captions_batch",
    "RankedCaption", "RankedImage", "rerank_by_image", "rerank_by_text",
    "ZeroShotResult", "zero_shot_classify",
    "GeneratedImages", "generate_images", "image_grid",
    "ParsedCaption", "parse_caption", "aggregate", "format_caption",
    "CaptionEvidence", "NutritionPrediction", "predict_nutrition", "predict_nutrition_batch",
    "answer", "answer_batch", "answer_text", "answer_text_batch", "read_text", "read_text_batch",
    "continue_text", "continue_text_batch",
]
