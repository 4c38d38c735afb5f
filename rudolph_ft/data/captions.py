"""Caption rules: how a table row becomes the caption a model learns, and which captions are kept (no tokenizer)."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

from ..tasks import FOOD_SCHEMA
from .tables import DataError

__all__ = ["ARTICLE_TEMPLATE", "CaptionRules", "CaptionError"]

# The article's caption (`rudolph_ft.tasks.FOOD_SCHEMA`): "блюдо: {name}; белков: {belok}; жиров: {fats};
# углеводов: {uglevod}; ккал: {kkal};", lower-cased, kept only when 10 < len(caption) < 100 (RECIPE §1).
ARTICLE_TEMPLATE = FOOD_SCHEMA.template


class CaptionError(DataError):
    """A caption template or caption column that cannot work with the table (a configuration error)."""


@dataclass(frozen=True)
class CaptionRules:
    """How a row becomes a caption, and the caption's length rule. Defaults are the article's.

    Attributes:
        template: `str.format` template over the row's columns, e.g. `"блюдо: {name}; ккал: {kkal};"`; values are
            inserted as written in the file. Used when `column` is None.
        column: take the caption verbatim from this column instead of a template.
        lowercase: lower-case the caption, as the article does (the text tokenizer does not change case).
        min_chars: keep a caption only if `min_chars < len(caption)`; None for no lower bound.
        max_chars: keep a caption only if `len(caption) < max_chars`; None for no upper bound.
    """

    template: str | None = ARTICLE_TEMPLATE
    column: str | None = None
    lowercase: bool = True
    min_chars: int | None = 10
    max_chars: int | None = 100

    def __post_init__(self) -> None:
        if self.column is None and not self.template:
            raise CaptionError("caption rules need a template or a caption column; set one of them")
        if self.column is None:
            self.fields()  # validates the template early

    def fields(self) -> tuple[str, ...]:
        """The columns the caption is made from, in template order, each once."""
        if self.column is not None:
            return (self.column,)
        names: list[str] = []
        try:
            parsed = list(string.Formatter().parse(self.template or ""))
        except ValueError as err:
            raise CaptionError(f"caption template {self.template!r} is not a valid format string: {err}") from None
        for _, name, _, _ in parsed:
            if name is None:
                continue
            if not name or name.isdigit() or not re.fullmatch(r"[^.\[\]]+", name):
                raise CaptionError(
                    f"caption template {self.template!r}: use column names in braces like {{name}}, not {{{name}}}"
                )
            if name not in names:
                names.append(name)
        return tuple(names)

    def literal_words(self) -> set[str]:
        """Words of the template's fixed text (`блюдо`, `белков`, ...): stop-words for a word cloud."""
        if self.column is not None:
            return set()
        text = " ".join(literal for literal, *_ in string.Formatter().parse(self.template or ""))
        return {word.lower() for word in re.findall(r"\w+", text)}

    def render(self, row: Mapping[str, str]) -> str:
        """The caption of one row (lower-cased and stripped as configured), before the length rule.

        Raises:
            CaptionError: the row lacks a column the caption needs.
        """
        missing = [name for name in self.fields() if name not in row]
        if missing:
            raise CaptionError(f"the table has no column {', '.join(map(repr, missing))}; columns: {', '.join(row)}")
        caption = row[self.column] if self.column is not None else (self.template or "").format_map(row)
        caption = caption.strip()
        return caption.lower() if self.lowercase else caption

    def length_problem(self, caption: str) -> tuple[str, str] | None:
        """`(reason code, message)` when the caption breaks the length rule, else None."""
        length = len(caption)
        if self.min_chars is not None and length <= self.min_chars:
            return "caption_too_short", f"caption has {length} characters, needs more than {self.min_chars}"
        if self.max_chars is not None and length >= self.max_chars:
            return "caption_too_long", f"caption has {length} characters, needs fewer than {self.max_chars}"
        return None
