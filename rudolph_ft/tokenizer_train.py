"""Learning a BPE vocabulary in YouTokenToMe's format from texts (pure Python, for caption sets of a few 10k lines).

Used through `rudolph_ft.tokenizer.train_tokenizer`. The steps follow youtokentome's `learn_bpe_from_string`
(alphabet by frequency with '▁' first, character coverage, '▁'-prefixed words, most frequent pair first, ids
renamed around the special ids), so the files look like youtokentome's and youtokentome reads them; the exact
merges may differ from youtokentome's on the same text (it counts runs of one character differently and
breaks ties by thread timing), which does not matter: encoding only reads the file.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from itertools import pairwise

from .tokenizer import SPACE_SYMBOL, YTTM_SPACES, BpeModel, split_words

__all__ = ["learn_bpe"]

Pair = tuple[int, int]


def learn_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    coverage: float = 1.0,
    pad_id: int = 0,
    unk_id: int = 1,
    bos_id: int = 2,
    eos_id: int = 3,
    split_digits: bool = False,
) -> BpeModel:
    """Learn a BPE model of `vocab_size` ids from `texts` (arguments: `tokenizer.train_tokenizer`)."""
    specials = _check_arguments(vocab_size, coverage, pad_id, unk_id, bos_id, eos_id)
    texts = list(texts)
    char_counts = Counter(char for text in texts for char in text if char not in YTTM_SPACES)
    if not char_counts:
        raise ValueError("the training texts hold no characters besides whitespace")
    text_length = sum(len(text) + 1 for text in texts)  # as one file, one text per line
    removed = _rare_chars(char_counts, text_length, coverage)
    # internal ids: 0..n_special-1 reserved, then '▁', then characters from the most frequent (ties: higher code)
    first = len(specials)
    alphabet = [SPACE_SYMBOL] + sorted(
        (c for c in char_counts if c not in removed), key=lambda c: (char_counts[c], ord(c)), reverse=True
    )
    char_ids = {char: first + index for index, char in enumerate(alphabet)}
    if first + len(alphabet) > vocab_size:
        raise ValueError(
            f"vocab_size {vocab_size} is too small for the {len(alphabet)} characters and "
            f"{len(specials)} special tokens of these texts; set vocab_size >= {first + len(alphabet)}"
        )
    delete_removed = str.maketrans(dict.fromkeys(removed))
    word_counts = Counter(word for text in texts for word in split_words(text.translate(delete_removed)))
    words = [[char_ids[SPACE_SYMBOL]] + [char_ids[char] for char in word] for word in word_counts]
    counts = list(word_counts.values())
    if split_digits:  # a digit is a piece of its own: no pair holding one is ever counted, so none is merged
        digits = {token_id for char, token_id in char_ids.items() if char.isdigit()}
        words, counts = _cut_at(words, counts, digits)
    rules = _learn_merges(words, counts, first + len(alphabet), vocab_size)
    if first + len(alphabet) + len(rules) < vocab_size:
        warnings.warn(
            f"the texts allow only {len(rules)} merges: the vocabulary has "
            f"{first + len(alphabet) + len(rules)} ids instead of {vocab_size}",
            stacklevel=3,
        )
    rename = _renaming(set(specials.values()), first, first + len(alphabet) + len(rules))
    return BpeModel(
        chars={char: rename[token_id] for char, token_id in char_ids.items()},
        rules=tuple((rename[x], rename[y], rename[z]) for x, y, z in rules),
        pad_id=pad_id,
        unk_id=unk_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )


def _check_arguments(
    vocab_size: int, coverage: float, pad_id: int, unk_id: int, bos_id: int, eos_id: int
) -> dict[str, int]:
    """The special tokens in use, name -> id, after youtokentome's `check_config` tests."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if not 0 <= unk_id < vocab_size:
        raise ValueError(f"unk_id must be in [0, vocab_size - 1], got {unk_id} (vocab_size {vocab_size})")
    specials = {"pad": pad_id, "unk": unk_id, "bos": bos_id, "eos": eos_id}
    for name, token_id in specials.items():
        if not -1 <= token_id < vocab_size:
            raise ValueError(f"{name}_id must be in [-1, vocab_size - 1], got {token_id} (vocab_size {vocab_size})")
    specials = {name: token_id for name, token_id in specials.items() if token_id != -1}
    if len(set(specials.values())) != len(specials):
        raise ValueError(f"special ids must differ, got {specials}")
    return specials


def _rare_chars(char_counts: Counter, text_length: int, coverage: float) -> set[str]:
    """The rarest characters, dropped while the rest still covers more than `coverage` of the text."""
    removed: set[str] = set()
    kept_length = text_length
    for char, count in sorted(char_counts.items(), key=lambda item: (item[1], ord(item[0]))):
        if kept_length - count <= text_length * coverage:
            break
        kept_length -= count
        removed.add(char)
    return removed


def _renaming(special_ids: set[int], first: int, end: int) -> dict[int, int]:
    """Internal id (first..end-1) -> file id: the free ids around the special ids, in order."""
    free = (token_id for token_id in range(end + len(special_ids)) if token_id not in special_ids)
    return dict(zip(range(first, end), free, strict=False))


def _cut_at(words: list[list[int]], counts: list[int], cut: set[int]) -> tuple[list[list[int]], list[int]]:
    """The words' runs of ids between ids of `cut` (which are dropped), each with its word's count."""
    pieces, piece_counts = [], []
    for word, count in zip(words, counts, strict=True):
        piece: list[int] = []
        for token_id in (*word, None):
            if token_id is None or token_id in cut:
                if len(piece) > 1:
                    pieces.append(piece)
                    piece_counts.append(count)
                piece = []
            else:
                piece.append(token_id)
    return pieces, piece_counts


def _learn_merges(words: list[list[int]], counts: list[int], next_id: int, vocab_size: int) -> list[tuple]:
    """Merge the most frequent adjacent pair into a new id until `vocab_size` ids exist or no pair is left.

    Pair counts are kept up to date incrementally (only words holding the merged pair change); a heap with lazy
    invalidation finds the best pair. Ties: the pair with the smaller larger id, then smaller smaller id, then
    larger left id (youtokentome's `MergeCandidate` order).
    """
    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        for pair in pairwise(word):
            pair_counts[pair] += counts[index]
            where[pair].add(index)
    heap = [_heap_key(pair, count) for pair, count in pair_counts.items()]
    heapify(heap)
    rules = []
    while next_id < vocab_size:
        pair = _pop_best(heap, pair_counts)
        if pair is None:
            break
        rules.append((pair[0], pair[1], next_id))
        changed = _apply_merge(pair, next_id, words, counts, pair_counts, where)
        for other in changed:
            if pair_counts.get(other, 0) > 0:
                heappush(heap, _heap_key(other, pair_counts[other]))
        next_id += 1
    return rules


def _heap_key(pair: Pair, count: int) -> tuple:
    return (-count, max(pair), min(pair), -pair[0], pair)


def _pop_best(heap: list[tuple], pair_counts: dict[Pair, int]) -> Pair | None:
    """The most frequent pair; entries whose count is out of date are dropped (a fresh one was pushed)."""
    while heap:
        negative_count, *_, pair = heappop(heap)
        if pair_counts.get(pair, 0) == -negative_count > 0:
            return pair
    return None


def _apply_merge(
    pair: Pair,
    new_id: int,
    words: list[list[int]],
    counts: list[int],
    pair_counts: dict[Pair, int],
    where: dict[Pair, set[int]],
) -> set[Pair]:
    """Replace `pair` by `new_id` (left to right) in every word holding it; returns the pairs whose count changed."""
    changed: set[Pair] = set()
    for index in sorted(where.pop(pair, ())):
        word = words[index]
        merged = _merge_pair(word, pair, new_id)
        if len(merged) == len(word):  # stale index: the pair left this word in an earlier merge
            continue
        count = counts[index]
        for old in pairwise(word):
            pair_counts[old] -= count
            changed.add(old)
        for new in pairwise(merged):
            pair_counts[new] += count
            changed.add(new)
            where[new].add(index)
        words[index] = merged
    for old in changed:
        if pair_counts.get(old) == 0:
            del pair_counts[old]
    return changed


def _merge_pair(word: list[int], pair: Pair, new_id: int) -> list[int]:
    left, right = pair
    merged, index, size = [], 0, len(word)
    while index < size:
        if index + 1 < size and word[index] == left and word[index + 1] == right:
            merged.append(new_id)
            index += 2
        else:
            merged.append(word[index])
            index += 1
    return merged
