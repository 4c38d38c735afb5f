"""The text tokenizer: YouTokenToMe (`youtokentome` 1.0.6) BPE models read, written and applied in pure Python.

RuDOLPH reads text through ruDALL-E's YouTokenToMe BPE (`bpe.model` in hub repo `shonenkov/rudalle-utils`; ids
pad 0, unk 1, bos 2, eos 3). A pretrained model only understands the ids it was trained on, so `Tokenizer`
reproduces `yttm.BPE(model).encode(texts, output_type=ID)` and `.decode(ids, ignore_ids)` id for id, without
youtokentome's C++ build. What youtokentome does (its `bpe.cpp`), and so what this module does:

- Words are the runs between whitespace, where whitespace is C's `isspace` below 256 (tab, newline, vertical
  tab, form feed, carriage return, space) plus the meta symbol '▁' (U+2581). Leading, trailing and repeated
  whitespace therefore never produce ids; NBSP, U+2003, U+3000 and the like are ordinary (usually unknown) chars.
- Each word becomes '▁' followed by its characters' ids; a run of consecutive characters missing from the model
  becomes one unknown symbol that never merges and is output as `unk_id`.
- Merges: the adjacent pair whose rule comes first in the file is merged, the leftmost one on ties, until no
  rule applies (a priority queue of (rule index, position) events with lazy invalidation).
- BPE-dropout: each event popped from that queue is skipped with probability p; the skipped ones go back as soon
  as one is taken; p = 1 leaves the characters unmerged. youtokentome draws from one process-wide `std::mt19937`
  (seed 5489, so its dropout cannot be seeded per call); here the draws come from the `random.Random` you pass,
  one per popped event as in youtokentome: the same stream gives the same ids (the tests replay youtokentome's).
- Decoding joins the subwords, '▁' at the start of a subword becoming a space, and drops one leading space.

Words are cached (`Tokenizer(cache_size=...)`), so caption sets with a few thousand distinct words encode faster
than youtokentome itself (`benchmarks/bench_tokenizer.py`).

Case: like ruDALL-E's `YTTMTokenizerWrapper`, nothing here changes case or strips text. The reference pipelines
(and the recipe) call `text.lower().strip()` before encoding: use `normalize_text` for that.
"""

from __future__ import annotations

import gc
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from itertools import chain
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from .config import TOKENIZER_FILES
from .hub import local_path, resolve_file

__all__ = [
    "SPACE_SYMBOL",
    "BpeModel",
    "Tokenizer",
    "TokenizerFileError",
    "load_tokenizer",
    "normalize_text",
    "split_words",
    "tokenizer_file",
    "train_tokenizer",
]

SPACE_SYMBOL = "\u2581"  # '▁': starts every word; youtokentome's SPACE_TOKEN (9601)
MODEL_FILENAME = "bpe.model"
SPECIAL_SUBWORDS = {"pad": "<PAD>", "unk": "<UNK>", "bos": "<BOS>", "eos": "<EOS>"}

# youtokentome's is_space(): C isspace() below 256 (in the C / UTF-8 locales) and '▁'.
YTTM_SPACES = "\t\n\x0b\x0c\r " + SPACE_SYMBOL
_TO_SPACE = str.maketrans(dict.fromkeys(YTTM_SPACES, " "))
# Characters where Python's `str.split()` and youtokentome disagree: whitespace only to Python, and '▁', which
# youtokentome splits on. Text without them (almost all text) can use the fast `str.split()`.
# tests/test_tokenizer.py checks this list against `str.isspace` over all of Unicode.
_SPLIT_MISMATCH = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u2581]")

_UNKNOWN = -1  # symbol of a run of characters missing from the model (never merges; output as unk_id)
_DEAD = -2  # token of a node merged into its left neighbour
_MODULE_RNG: Any = random  # dropout's default stream: the `random` module's functions (seeded by `random.seed`)


class TokenizerFileError(ValueError):
    """A file that is not a YouTokenToMe BPE model. The message names the file and what is wrong."""


def normalize_text(text: str) -> str:
    """`text.lower().strip()`: what the reference pipelines do to a text before `encode_text` (RECIPE §4)."""
    return text.lower().strip()


def split_words(text: str) -> list[str]:
    """The words youtokentome sees in `text`: the non-empty runs between its whitespace (see module doc)."""
    if _SPLIT_MISMATCH.search(text) is None:
        return text.split()
    return [word for word in text.translate(_TO_SPACE).split(" ") if word]


@dataclass(frozen=True)
class BpeModel:
    """The content of a YouTokenToMe `bpe.model`: characters, merge rules and special-token ids.

    File format (whitespace-separated integers): `n_chars n_rules`, then `n_chars` lines `codepoint id`, then
    `n_rules` lines `x y z` (rule i merges the pair of ids (x, y) into id z; a lower i merges first), then one
    line `unk_id pad_id bos_id eos_id` (-1 for an absent special token).

    Attributes:
        chars: character -> id, '▁' included.
        rules: (x, y, z) merge rules in priority order.
        pad_id, unk_id, bos_id, eos_id: special ids (-1: absent; unk is always present).
    """

    chars: dict[str, int]
    rules: tuple[tuple[int, int, int], ...]
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    @property
    def special_ids(self) -> dict[str, int]:
        """The special tokens that exist, name -> id (`pad`, `unk`, `bos`, `eos`)."""
        ids = {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id}
        return {name: value for name, value in ids.items() if value != -1}

    @property
    def vocab_size(self) -> int:
        """Number of ids: characters + rules + special tokens (youtokentome's `vocab_size()`)."""
        return len(self.chars) + len(self.rules) + len(self.special_ids)

    def subwords(self) -> list[str]:
        """The string of every id ('▁' kept; `<PAD>`, `<UNK>`, ... for special ids): youtokentome's `vocab()`."""
        pieces: dict[int, str] = {token_id: char for char, token_id in self.chars.items()}
        for x, y, z in self.rules:
            pieces[z] = pieces.get(x, "") + pieces.get(y, "")
        for name, token_id in self.special_ids.items():
            pieces[token_id] = SPECIAL_SUBWORDS[name]
        return [pieces[token_id] for token_id in range(self.vocab_size)]

    def to_text(self) -> str:
        """The model in youtokentome's file format."""
        lines = [f"{len(self.chars)} {len(self.rules)}"]
        lines += [f"{ord(char)} {token_id}" for char, token_id in sorted(self.chars.items(), key=lambda kv: kv[1])]
        lines += [f"{x} {y} {z}" for x, y, z in self.rules]
        lines.append(f"{self.unk_id} {self.pad_id} {self.bos_id} {self.eos_id}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model file (readable by `youtokentome.BPE(model=path)`); returns its path."""
        path = Path(path)
        path.write_text(self.to_text(), encoding="ascii")
        return path

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> BpeModel:
        """Read and check a `bpe.model` file.

        Raises:
            FileNotFoundError: no such file.
            TokenizerFileError: the file is not a valid YouTokenToMe BPE model (the message says why).
        """
        path = Path(path)
        try:
            text = path.read_bytes().decode("ascii")
        except UnicodeDecodeError:
            raise TokenizerFileError(_bad_file(path, "it is not a text file of integers")) from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> BpeModel:
        """Parse youtokentome's file format (see the class doc); `source` names the file in errors."""
        try:
            numbers = [int(token) for token in text.split()]
        except ValueError as err:
            raise TokenizerFileError(_bad_file(source, f"it holds a non-integer ({err})")) from None
        if len(numbers) < 2 or min(numbers[:2]) < 0:
            raise TokenizerFileError(_bad_file(source, "no 'n_chars n_rules' header"))
        n_chars, n_rules = numbers[:2]
        needed = 2 + 2 * n_chars + 3 * n_rules + 4
        if len(numbers) < needed:
            raise TokenizerFileError(
                _bad_file(
                    source,
                    f"the header announces {n_chars} chars and {n_rules} rules ({needed} numbers), the file "
                    f"has only {len(numbers)} numbers (truncated?)",
                )
            )
        pairs = numbers[2 : 2 + 2 * n_chars]
        if any(not 0 <= code < 0x110000 or 0xD800 <= code <= 0xDFFF for code in pairs[::2]):
            raise TokenizerFileError(_bad_file(source, "a character code is not a Unicode scalar value"))
        chars = {chr(code): token_id for code, token_id in zip(pairs[::2], pairs[1::2], strict=True)}
        flat = numbers[2 + 2 * n_chars : needed - 4]
        rules = tuple(zip(flat[::3], flat[1::3], flat[2::3], strict=True))
        unk_id, pad_id, bos_id, eos_id = numbers[needed - 4 : needed]
        model = cls(chars, rules, pad_id=pad_id, unk_id=unk_id, bos_id=bos_id, eos_id=eos_id)
        problem = model.problem(declared_chars=n_chars)
        if problem:
            raise TokenizerFileError(_bad_file(source, problem))
        return model

    def problem(self, declared_chars: int | None = None) -> str | None:
        """What makes this model unusable (a sentence), or None when it is consistent."""
        if declared_chars is not None and len(self.chars) != declared_chars:
            return "a character is listed twice"
        if SPACE_SYMBOL not in self.chars:
            return "the word-start symbol '\u2581' (U+2581) has no id"
        if self.unk_id < 0 or min(self.pad_id, self.bos_id, self.eos_id) < -1:
            return f"bad special ids (unk {self.unk_id}, pad {self.pad_id}, bos {self.bos_id}, eos {self.eos_id})"
        known = list(self.special_ids.values()) + list(self.chars.values())
        defined = set(self.chars.values())
        for index, (x, y, z) in enumerate(self.rules):
            if x not in defined or y not in defined:
                return f"rule {index} ({x} {y} {z}) merges an id that no earlier line defines"
            defined.add(z)
            known.append(z)
        if sorted(known) != list(range(len(known))):
            return "the ids of special tokens, characters and rules are not exactly 0..vocab_size-1, each once"
        return None


def _bad_file(source: str | os.PathLike, reason: str) -> str:
    return (
        f"{source}: not a YouTokenToMe BPE model file: {reason}. Pass a `bpe.model` written by youtokentome "
        "or by `train_tokenizer`."
    )


class _WordCache(dict):
    """word -> ids, filled on first use; emptied when it reaches `max_size` words (bounded memory; 0: no cache)."""

    def __init__(self, encode_word: Callable[[str], tuple[int, ...]], max_size: int):
        super().__init__()
        self.encode_word = encode_word
        self.max_size = max_size

    def __missing__(self, word: str) -> tuple[int, ...]:
        ids = self.encode_word(word)
        if self.max_size > 0:
            if len(self) >= self.max_size:
                self.clear()
            self[word] = ids
        return ids


class Tokenizer:
    """A YouTokenToMe BPE tokenizer: youtokentome 1.0.6's ids and texts, plus ruDALL-E's fixed-length wrapper.

    Args:
        model: the BPE model (`BpeModel.from_file`, or use `Tokenizer.from_file` / `load_tokenizer`).
        cache_size: how many distinct words to keep encoded (0: none); the cache empties when full.
    """

    def __init__(self, model: BpeModel, *, cache_size: int = 1 << 18):
        problem = model.problem()
        if problem:
            raise ValueError(f"inconsistent BPE model: {problem}")
        self.model = model
        self.cache_size = cache_size
        self._char_ids = model.chars
        self._space_id = model.chars[SPACE_SYMBOL]
        self._rules = model.rules
        self._rank = {(x, y): index for index, (x, y, _) in enumerate(model.rules)}  # a repeated pair: last wins
        self._subwords = model.subwords()
        self._ids_of_subwords = {subword: token_id for token_id, subword in enumerate(self._subwords)}
        # youtokentome answers the four special names first, with the id of the file (-1 when absent)
        names = ("pad", "unk", "bos", "eos")
        self._ids_of_subwords.update({SPECIAL_SUBWORDS[name]: getattr(model, f"{name}_id") for name in names})
        # what decoding prints for each id: a leading '▁' becomes a space
        self._decode_pieces = [" " + p[1:] if p.startswith(SPACE_SYMBOL) else p for p in self._subwords]
        self._cache = _WordCache(self._encode_word, cache_size)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> Tokenizer:
        """Read a `bpe.model` file (see `BpeModel.from_file` for the errors)."""
        return cls(BpeModel.from_file(path), **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as a youtokentome `bpe.model` file."""
        return self.model.save(path)

    def __getstate__(self) -> dict[str, Any]:  # pickling (DataLoader workers) sends the model, not the cache
        return {"model": self.model, "cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], cache_size=state["cache_size"])

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, chars={len(self._char_ids)}, rules={len(self._rules)})"

    # Vocabulary ------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids (16384 for ruDALL-E's model)."""
        return self.model.vocab_size

    @property
    def pad_id(self) -> int:
        return self.model.pad_id

    @property
    def unk_id(self) -> int:
        return self.model.unk_id

    @property
    def bos_id(self) -> int:
        return self.model.bos_id

    @property
    def eos_id(self) -> int:
        return self.model.eos_id

    def vocab(self) -> list[str]:
        """Every id's subword, '▁' kept, `<PAD>`/`<UNK>`/`<BOS>`/`<EOS>` for special ids (youtokentome's `vocab()`)."""
        return list(self._subwords)

    def id_to_subword(self, token_id: int) -> str:
        """The subword of an id, as youtokentome's `id_to_subword` (ValueError outside 0..vocab_size-1)."""
        self._check_id(token_id)
        return self._subwords[token_id]

    def subword_to_id(self, subword: str) -> int:
        """The id of a subword ('▁' marks a word start), `unk_id` for strings that are no subword."""
        return self._ids_of_subwords.get(subword, self.unk_id)

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < len(self._subwords):
            raise ValueError(
                f"id must be in the range [0, vocab_size - 1]. Current value: vocab_size = "
                f"{len(self._subwords)}; id={token_id};"
            )

    # Encoding --------------------------------------------------------------------------------------------------
    @overload
    def encode(self, texts: str, *, dropout: float = 0.0, rng: random.Random | None = None) -> list[int]: ...

    @overload
    def encode(
        self, texts: Sequence[str], *, dropout: float = 0.0, rng: random.Random | None = None
    ) -> list[list[int]]: ...

    def encode(self, texts, *, dropout=0.0, rng=None):
        """BPE ids of a text or of each text of a list, as `yttm.BPE.encode(texts, output_type=ID, dropout_prob=p)`.

        No bos/eos, no padding, no case change (see `encode_text` and `normalize_text`).

        Args:
            texts: a string (gives one list of ids) or a sequence of strings (gives a list of lists).
            dropout: BPE-dropout probability in [0, 1] (training-time regularisation); 0 is the plain encoding.
            rng: the random stream of dropout (default: the `random` module's), e.g. `random.Random(seed)`.
        """
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if isinstance(texts, str):
            return self._encode_one(texts, dropout, rng)
        if not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        if dropout:
            return [self._encode_one(text, dropout, rng) for text in texts]
        cache = self._cache
        encoded = []
        with _gc_paused():
            for text in texts:  # the hot loop of training-set encoding: inlined `_encode_one`
                ids: list[int] = []
                for word in text.split() if _SPLIT_MISMATCH.search(text) is None else split_words(text):
                    ids += cache[word]
                encoded.append(ids)
        return encoded

    def _encode_one(self, text: str, dropout: float, rng: random.Random | None) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        ids: list[int] = []
        if dropout:
            rng = rng if rng is not None else _MODULE_RNG
            for word in split_words(text):
                ids += self._merge(self._symbols(word), dropout, rng)
            unk = self.unk_id
            return [unk if token == _UNKNOWN else token for token in ids]
        cache = self._cache
        for word in split_words(text):
            ids += cache[word]
        return ids

    def _encode_word(self, word: str) -> tuple[int, ...]:
        merged = self._merge(self._symbols(word), 0.0, None)
        if _UNKNOWN in merged:
            merged = [self.unk_id if token == _UNKNOWN else token for token in merged]
        return tuple(merged)

    def _symbols(self, word: str) -> list[int]:
        """'▁' and the word's character ids; a run of unknown characters is one `_UNKNOWN` symbol."""
        symbols = [self._space_id, *map(self._char_ids.get, word)]
        if None not in symbols:
            return symbols
        runs = [self._space_id]
        for token in symbols[1:]:
            if token is not None:
                runs.append(token)
            elif runs[-1] != _UNKNOWN:
                runs.append(_UNKNOWN)
        return runs

    def _merge(self, tokens: list[int], dropout: float, rng: random.Random | None) -> list[int]:
        """youtokentome's merge loop over one word's symbols (`BaseEncoder::encode_sentence`).

        Events (rule index, left position) sit in a min-heap; a popped event whose pair is gone is dropped, as is
        every event BPE-dropout skips (those return to the heap after the next popped event).
        """
        size = len(tokens)
        if size < 2:
            return tokens
        rank, rules = self._rank, self._rules
        next_pos = list(range(1, size + 1))
        next_pos[-1] = -1
        prev_pos = list(range(-1, size - 1))
        heap = [(r, pos) for pos in range(size - 1) if (r := rank.get((tokens[pos], tokens[pos + 1]))) is not None]
        heapify(heap)
        while heap:
            event = _pop_event(heap, dropout, rng) if dropout else heappop(heap)
            if event is None:
                break
            rule, pos1 = event
            pos2 = next_pos[pos1]
            x, y, z = rules[rule]
            if tokens[pos1] != x or pos2 == -1 or tokens[pos2] != y:
                continue
            pos0, pos3 = prev_pos[pos1], next_pos[pos2]
            tokens[pos2], next_pos[pos2], prev_pos[pos2] = _DEAD, -1, -1
            tokens[pos1], next_pos[pos1] = z, pos3
            if pos3 != -1:
                prev_pos[pos3] = pos1
            if pos0 != -1 and (r := rank.get((tokens[pos0], z))) is not None:
                heappush(heap, (r, pos0))
            if pos3 != -1 and (r := rank.get((z, tokens[pos3]))) is not None:
                heappush(heap, (r, pos1))
        merged, pos = [], 0
        while pos != -1:
            merged.append(tokens[pos])
            pos = next_pos[pos]
        return merged

    # Fixed-length tensors (ruDALL-E's YTTMTokenizerWrapper) ------------------------------------------------------
    def encode_text(
        self, text: str, length: int, bpe_dropout: float = 0.0, rng: random.Random | None = None
    ) -> torch.Tensor:
        """`[bos] + ids + [eos]`, truncated to `length` (the eos goes first), padded with `pad_id` (0).

        The wrapper's `encode_text(text, text_seq_length, bpe_dropout)`; the text is used as given (lower-case and
        strip it first, as the reference pipelines do, with `normalize_text`).

        Returns:
            (length,) int64 tensor.
        """
        return torch.tensor(self._fixed_length(self.encode(text, dropout=bpe_dropout, rng=rng), length))

    def encode_batch(
        self, texts: Sequence[str], length: int, bpe_dropout: float = 0.0, rng: random.Random | None = None
    ) -> torch.Tensor:
        """`encode_text` of each text, stacked.

        Returns:
            (len(texts), length) int64 tensor.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of texts; use encode_text for one text")
        self._fixed_length([], length)  # checks length and the special ids
        rows = self.encode(list(texts), dropout=bpe_dropout, rng=rng)
        return _fixed_length_tensor(rows, length, self.bos_id, self.eos_id, self.pad_id)

    def _fixed_length(self, ids: list[int], length: int) -> list[int]:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if min(self.bos_id, self.eos_id, self.pad_id) < 0:
            raise ValueError("this BPE model has no <PAD>, <BOS> or <EOS> id; encode_text needs all three")
        ids = [self.bos_id, *ids, self.eos_id][:length]
        return ids + [self.pad_id] * (length - len(ids))

    # Decoding --------------------------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int] | torch.Tensor, ignore_ids: Iterable[int] | None = None) -> str:
        """Text of one sequence of ids, as `yttm.BPE.decode([ids], ignore_ids)[0]`.

        Ids in `ignore_ids` are skipped; other special ids print as `<PAD>`, `<UNK>`, `<BOS>`, `<EOS>`.
        Raises ValueError for an id outside 0..vocab_size-1 that is not ignored.
        """
        ignore = set(ignore_ids) if ignore_ids is not None else ()
        pieces = self._decode_pieces
        parts = []
        for token_id in _id_list(ids):
            if token_id in ignore:
                continue
            if not 0 <= token_id < len(pieces):
                self._check_id(token_id)
            parts.append(pieces[token_id])
        text = "".join(parts)
        return text[1:] if text.startswith(" ") else text

    def decode_text(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one sequence, pad/unk/bos/eos skipped: the wrapper's `decode_text` (which skips ids 0-3)."""
        return self.decode(ids, ignore_ids=self.model.special_ids.values())

    def decode_batch(self, ids: Sequence[Sequence[int]] | torch.Tensor) -> list[str]:
        """`decode_text` of each row of a (B, length) tensor or list of sequences."""
        rows = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        if len(rows) and isinstance(rows[0], int):
            raise TypeError("decode_batch takes a batch of sequences (B, length); use decode_text for one sequence")
        return [self.decode_text(row) for row in rows]


def _fixed_length_tensor(rows: list[list[int]], length: int, bos_id: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """`[bos] + row + [eos]` cut or padded to `length` for every row, as one (len(rows), length) int64 tensor.

    Scatters all ids at once with numpy (building a tensor from 10^5 Python lists costs ~10x more).
    """
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))  # (B,)
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    kept = np.minimum(lengths, length - 1)  # ids that fit after bos
    out = np.full((len(rows), length), pad_id, dtype=np.int64)  # (B, length)
    out[:, 0] = bos_id
    row_of = np.repeat(np.arange(len(rows)), kept)  # (sum(kept),)
    column = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)  # 0.. within each row
    out[row_of, 1 + column] = flat[np.repeat(np.cumsum(lengths) - lengths, kept) + column]
    with_eos = np.flatnonzero(lengths + 1 < length)
    out[with_eos, lengths[with_eos] + 1] = eos_id
    return torch.from_numpy(out)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, as `timeit` does, while a batch builds its lists of ids.

    Those lists hold no reference cycles, but each one counts towards the collector's thresholds, and in a
    process holding torch a full collection walks some 10^5 objects: on 100k captions the collector took
    ~40 % of the time. The previous state is restored (a collector that was off stays off).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _pop_event(heap: list[tuple[int, int]], dropout: float, rng: random.Random) -> tuple[int, int] | None:
    """youtokentome's `DropoutQueue::pop`: skip each top event with probability `dropout`; None when none is left.

    One `rng.random()` per popped event; the skipped events go back into the heap.
    """
    skipped = []
    event = None
    while heap:
        candidate = heappop(heap)
        if rng.random() < dropout:
            skipped.append(candidate)
        else:
            event = candidate
            break
    for candidate in skipped:
        heappush(heap, candidate)
    return event


def _id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if values and not isinstance(values[0], int):
        raise TypeError(f"expected one sequence of int ids, got elements of type {type(values[0]).__name__}")
    return values


# Loading and training ----------------------------------------------------------------------------------------------
def load_tokenizer(
    name_or_path: str | os.PathLike = "rudalle",
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> Tokenizer:
    """Load a text tokenizer.

    Args:
        name_or_path: a `bpe.model` file, a folder holding one, or a name of `config.TOKENIZER_FILES`
            (`rudalle`: ruDALL-E's 16384-id model from hub repo `shonenkov/rudalle-utils`, taken from the HF cache
            and downloaded when missing). A local path wins over a name.
        cache_dir: HF cache override. offline: forbid downloads (default: `HF_HUB_OFFLINE`).

    Raises:
        FileNotFoundError: neither an existing path nor a known name; a folder without `bpe.model`.
        hub.WeightsNotFoundError: a named file is not cached and cannot be downloaded (offline); says what to do.
        TokenizerFileError: the file is not a YouTokenToMe model.
    """
    return Tokenizer.from_file(tokenizer_file(name_or_path, cache_dir=cache_dir, offline=offline))


def tokenizer_file(
    name_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> Path:
    """The `bpe.model` file `load_tokenizer(name_or_path)` reads (same arguments and errors, the file unchecked)."""
    path = local_path(name_or_path)
    if path is not None:
        if not path.is_dir():
            return path
        if not (path / MODEL_FILENAME).is_file():
            raise FileNotFoundError(f"{path}: folder has no {MODEL_FILENAME}; pass the model file itself")
        return path / MODEL_FILENAME
    name = str(name_or_path)
    if name not in TOKENIZER_FILES:
        raise FileNotFoundError(
            f"{name!r} is neither an existing bpe.model file or folder nor a tokenizer name "
            f"({', '.join(TOKENIZER_FILES)})"
        )
    return resolve_file(TOKENIZER_FILES[name], cache_dir=cache_dir, offline=offline, what=f"{name} tokenizer")


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | os.PathLike | None = None,
    *,
    coverage: float = 1.0,
    pad_id: int = 0,
    unk_id: int = 1,
    bos_id: int = 2,
    eos_id: int = 3,
    split_digits: bool = False,
) -> Tokenizer:
    """Learn a new BPE vocabulary from texts (e.g. captions, for a tiny demo model) in youtokentome's format.

    Like `yttm.BPE.train`: words are split and prefixed with '▁' as in encoding, characters get ids by
    frequency, the rarest characters are dropped until `coverage` of the text's characters remain, and the most
    frequent adjacent pair is merged until `vocab_size` ids exist (fewer, with a warning, when no pair is left).
    Deterministic: the same texts give the same file. Texts are used as given (see `normalize_text`).

    Args:
        texts: training texts (one caption each).
        vocab_size: number of ids, special tokens, characters and merges together.
        out_path: where to write the `bpe.model` (None: do not write).
        coverage: fraction of character occurrences to keep in (0, 1].
        pad_id, unk_id, bos_id, eos_id: special ids (-1: none, except unk), youtokentome's defaults.
        split_digits: no merge holds a digit, so every number is encoded digit by digit (sentencepiece's option of
            the name): «548» is «5», «4», «8», whose first token says the hundreds, instead of «54», «8», whose
            first token is one of a hundred classes with no order among them.

    Returns:
        the tokenizer of the learned model.
    """
    from .tokenizer_train import learn_bpe

    model = learn_bpe(texts, vocab_size, coverage=coverage, pad_id=pad_id, unk_id=unk_id, bos_id=bos_id, eos_id=eos_id,
                      split_digits=split_digits)
    if out_path is not None:
        model.save(out_path)
    return Tokenizer(model)
