"""Read dish and nutrients out of generated captions, and agree on one answer over several captions (no torch).

Captions follow the article's template `блюдо: {name}; белков: {protein}; жиров: {fat}; углеводов: {carbs};
ккал: {kcal};` (`rudolph_ft.tasks.FOOD_SCHEMA`, which also gives the words each field may be named by), but a
model writes what it likes: fields go missing, come twice or in another order, numbers use a decimal comma ("3,5")
or carry units ("120 ккал"), words are cut off. `parse_caption` takes whatever it can find and never raises;
`aggregate` votes on the dish and takes the median of each nutrient.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..tasks import FOOD_SCHEMA

__all__ = ["NUTRIENTS", "ParsedCaption", "parse_caption", "parse_number", "aggregate", "format_caption"]

NUTRIENTS = FOOD_SCHEMA.fields  # ("protein", "fat", "carbs", "kcal")

# field -> prefixes of the words that name it (Russian as in the article's captions, and English), the dish first
_FIELD_WORDS = FOOD_SCHEMA.field_words()
_KEY = re.compile(r"(?P<key>[^\W\d_]+)\s*[:=]")  # a word followed by ':' (or '=')
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_KCAL_AFTER = re.compile(r"(?P<value>\d+(?:[.,]\d+)?)\s*(?:ккал|kcal)", re.IGNORECASE)
_STRIP = " \t\n;,.:"


@dataclass
class ParsedCaption:
    """What a caption says; a field is None when the caption does not give it (or gives junk).

    Attributes:
        dish: the dish name, lower-cased.
        protein, fat, carbs: grams (per 100 g in the article's data); kcal: kilocalories.
        text: the caption as given.
    """

    text: str
    dish: str | None = None
    protein: float | None = None
    fat: float | None = None
    carbs: float | None = None
    kcal: float | None = None

    @property
    def found(self) -> tuple[str, ...]:
        """Names of the fields the caption gave."""
        return tuple(name for name in ("dish", *NUTRIENTS) if getattr(self, name) is not None)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_number(text: str) -> float | None:
    """The first number in `text` ("3,5" and "3.5" alike); None when there is none or it is negative or not finite."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group().replace(",", "."))
    return value if math.isfinite(value) and value >= 0 else None


def _field_of(word: str) -> str | None:
    word = word.lower()
    for name, prefixes in _FIELD_WORDS.items():
        if word.startswith(prefixes):
            return name
    return None


def parse_caption(text: str) -> ParsedCaption:
    """Fields of a caption like `блюдо: борщ; белков: 3,5; жиров: 4; углеводов: 6; ккал: 70;`.

    A field is a known word followed by ':' and its value runs to the next known field (or ';'). The first value of
    a field wins. Numbers take the first number of their value; a value without one leaves the field None. Without
    a "ккал:" field, "<number> ккал" anywhere counts. Never raises.
    """
    parsed = ParsedCaption(text=text)
    keys = [(m, _field_of(m.group("key"))) for m in _KEY.finditer(text)]
    keys = [(m, name) for m, name in keys if name is not None]
    for i, (match, name) in enumerate(keys):
        end = keys[i + 1][0].start() if i + 1 < len(keys) else len(text)
        value = text[match.end():end].split(";")[0].strip(_STRIP)
        if getattr(parsed, name) is not None or not value:
            continue
        if name == "dish":
            parsed.dish = " ".join(value.lower().strip("-—–").split()) or None
        else:
            setattr(parsed, name, parse_number(value))
    if parsed.kcal is None:
        match = _KCAL_AFTER.search(text)
        if match:
            parsed.kcal = parse_number(match.group("value"))
    return parsed


def format_caption(dish: str, protein: float, fat: float, carbs: float, kcal: float) -> str:
    """The article's caption for these values (lower-cased), e.g. to compare a prediction with a label."""
    return FOOD_SCHEMA.caption(dish, protein=protein, fat=fat, carbs=carbs, kcal=kcal)


def aggregate(parsed: Sequence[ParsedCaption]) -> dict[str, str | float | None]:
    """One answer from several parsed captions (e.g. the best-ranked ones, best first).

    The dish is the most frequent one (ties: the one that comes first). Each nutrient is the median over the
    captions naming that dish, or over all captions when none of those gives the nutrient.

    Returns:
        {"dish", "protein", "fat", "carbs", "kcal"}: None where no caption gives a value.
    """
    dishes = [p.dish for p in parsed if p.dish]
    counts = Counter(dishes)
    dish = max(dishes, key=lambda d: (counts[d], -dishes.index(d))) if dishes else None
    result: dict[str, str | float | None] = {"dish": dish}
    for name in NUTRIENTS:
        agreeing = [getattr(p, name) for p in parsed if p.dish == dish and getattr(p, name) is not None]
        values = agreeing or [getattr(p, name) for p in parsed if getattr(p, name) is not None]
        # 4 decimals: captions carry 1-2, and the mean of two medians should not print as 24.599999999999998
        result[name] = round(float(statistics.median(values)), 4) if values else None
    return result
