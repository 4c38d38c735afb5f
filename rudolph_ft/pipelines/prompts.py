"""How texts become the token rows the reference pipelines feed RuDOLPH, in rc4's and rc10's conventions.

Two reference APIs exist and they lay out the same tasks differently (`STYLES`):

- `"rc4"`: `rudolph.pipelines` of rudolph 0.0.1rc4, the Habr article's API. Texts are `[bos] + ids + [eos]`;
  an empty left text is all pads (zeros, which the model turns into its per-position special tokens); every text
  column of the output layer is scored and sampled.
- `"rc10"`: `rudolph.api.ruDolphApi` of rudolph 0.0.1rc10, for the v2 checkpoints trained with task tokens. When
  the model has text special tokens a task token follows bos (`[bos, <RT_I2T>] + ids + [eos]`), the empty left
  text is `[bos, <LT_I2T>, eos]`, and the last `l_text_seq_length` text columns (the left-text pad tokens) and the
  image special tokens are left out of scoring and sampling.

The six task tokens sit right after the BPE vocabulary, at `vocab_size - l_text_seq_length + offset` (16384 +
offset for every official model, as rc10's `DEFAULT_SPC_TOKENS`).

Training (the article's recipe) uses rc4's layout: an empty left text and the caption as right text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RuDolphConfig
from ..tokenizer import Tokenizer, normalize_text

__all__ = ["STYLES", "SPECIAL_TOKEN_OFFSETS", "Prompter", "check_style", "resolve_style"]

STYLES = ("rc4", "rc10")
SPECIAL_TOKEN_OFFSETS = {"<LT_UNK>": 0, "<RT_UNK>": 1, "<LT_T2I>": 2, "<LT_I2T>": 3, "<LT_T2T>": 4, "<RT_I2T>": 5}


def check_style(style: str) -> str:
    """`style` itself when it is one of `STYLES`, else a ValueError that lists them."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)} (the reference API whose prompts and scoring to "
                         f"follow), got {style!r}")
    return style


def resolve_style(style: str, model_name: str, config: RuDolphConfig) -> str:
    """`style`, or for `"auto"`: rc10 for an official checkpoint with task tokens used as published (a hub preset
    name such as "350M"), else rc4, the layout the article's fine-tuning (and `rudolph-ft train`) teaches."""
    if style != "auto":
        return check_style(style)
    from ..config import MODEL_PRESETS

    preset = MODEL_PRESETS.get(str(model_name))
    official = preset is not None and preset.hub is not None and not Path(str(model_name)).exists()
    return "rc10" if official and config.text_special_tokens > 0 else "rc4"


@dataclass(frozen=True)
class Prompter:
    """The token rows of each task for one model + tokenizer, in one reference `style`.

    Attributes:
        config: the model's architecture.
        tokenizer: its text tokenizer.
        style: `"rc4"` (default, the article's) or `"rc10"`; see the module doc.
    """

    config: RuDolphConfig
    tokenizer: Tokenizer
    style: str = "rc4"

    def __post_init__(self) -> None:
        check_style(self.style)

    # Vocabulary ---------------------------------------------------------------------------------------------------
    @property
    def bpe_vocab_size(self) -> int:
        """Ids below this are BPE text; a sampled id at or above it ends the text (both references map it to eos)."""
        return self.config.vocab_size - self.config.l_text_seq_length

    @property
    def text_columns(self) -> int:
        """Text columns of the output layer that are scored and sampled (from column 0)."""
        cfg = self.config
        return cfg.text_vocab_size - (cfg.l_text_seq_length if self.style == "rc10" else 0)

    @property
    def image_columns(self) -> int:
        """Image columns of the output layer that are scored (from the first image column)."""
        cfg = self.config
        return cfg.image_vocab_size if self.style == "rc10" else cfg.image_vocab_total

    @property
    def uses_task_tokens(self) -> bool:
        return self.style == "rc10" and self.config.text_special_tokens > 0

    def special_id(self, name: str) -> int:
        """Id of a task token such as `<RT_I2T>` (see `SPECIAL_TOKEN_OFFSETS`)."""
        return self.bpe_vocab_size + SPECIAL_TOKEN_OFFSETS[name]

    # Rows ---------------------------------------------------------------------------------------------------------
    def encode(self, text: str, length: int, task_token: str | None = None) -> torch.Tensor:
        """`[bos] (+ task token) + ids + [eos]` of the lower-cased, stripped text, cut or padded to `length`.

        Returns:
            (length,) int64 tensor.
        """
        tok = self.tokenizer
        head = [tok.bos_id] + ([self.special_id(task_token)] if task_token and self.uses_task_tokens else [])
        ids = (head + tok.encode(normalize_text(text)) + [tok.eos_id])[:length]
        return torch.tensor(ids + [tok.pad_id] * (length - len(ids)), dtype=torch.long)

    def empty_left(self) -> torch.Tensor:
        """The left text of image-to-text tasks: pads (rc4) or `[bos, <LT_I2T>, eos]` (rc10)."""
        if self.style == "rc4":
            return torch.zeros(self.config.l_text_seq_length, dtype=torch.long)
        return self.encode("", self.config.l_text_seq_length, "<LT_I2T>")

    def right_text(self, text: str) -> torch.Tensor:
        """A right text to score given an image (zero-shot classes, `rerank_by_text`)."""
        return self.encode(text, self.config.r_text_seq_length, "<RT_I2T>")

    def right_prefix(self, template: str) -> torch.Tensor:
        """The start of generated captions: the encoded template without its eos (`[bos] + template ids`)."""
        encoded = self.right_text(template)
        return encoded[: int((encoded != 0).sum()) - 1]

    def left_caption(self, caption: str) -> torch.Tensor:
        """A caption as the left text, to score an image given it (`rerank_by_image`, rc10: task `<LT_T2I>`)."""
        return self.encode(caption, self.config.l_text_seq_length, "<LT_T2I>")

    def left_prompt(self, text: str) -> torch.Tensor:
        """A text-to-image prompt as the left text (`generate_images`)."""
        return self.encode(text, self.config.l_text_seq_length, "<LT_T2I>")

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Text of a generated right text: up to its first eos, special and task tokens skipped, stripped.

        Ids the tokenizer does not know (only a model with a larger vocabulary than its tokenizer makes them) are
        skipped too.
        """
        tok = self.tokenizer
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if tok.eos_id in values:
            values = values[: values.index(tok.eos_id)]
        known = min(tok.vocab_size, self.bpe_vocab_size)
        return tok.decode_text([i for i in values if 0 <= i < known]).strip()
