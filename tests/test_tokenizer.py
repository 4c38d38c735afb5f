"""The text tokenizer against youtokentome 1.0.6: ids, decodings, vocabulary and BPE-dropout draws recorded by
`scripts/make_tokenizer_fixtures.py` in the reference env (tests/assets/tokenizer/parity.json), plus the
wrapper semantics, the trainer, loading and errors. `-m reference` re-runs youtokentome live on fresh strings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, reference_python

from rudolph_ft.config import TOKENIZER_FILES
from rudolph_ft.hub import WeightsNotFoundError
from rudolph_ft.tokenizer import (
    SPACE_SYMBOL,
    YTTM_SPACES,
    BpeModel,
    Tokenizer,
    TokenizerFileError,
    load_tokenizer,
    normalize_text,
    split_words,
    train_tokenizer,
)

TOKENIZER_ASSETS = ASSETS / "tokenizer"
MODELS = ("yttm-ru-5000", "yttm-captions", "ours-captions")
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_tokenizer_fixtures.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tokenizer_fixtures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixtures_script = _load_script()


class YttmRandom(random.Random):
    """youtokentome's dropout stream: a fresh process's `std::mt19937` (seed 5489) through libstdc++'s
    `generate_canonical<double, 53>` (two 32-bit draws per number)."""

    def __init__(self, seed: int = 5489):
        super().__init__()
        state = [seed]
        for index in range(1, 624):
            state.append((1812433253 * (state[-1] ^ (state[-1] >> 30)) + index) & 0xFFFFFFFF)
        self.setstate((3, (*state, 624), None))

    def random(self) -> float:
        low, high = self.getrandbits(32), self.getrandbits(32)
        return min((float(low) + float(high) * 4294967296.0) / 18446744073709551616.0, 1.0 - 2.0**-53)


@pytest.fixture(scope="module")
def parity() -> dict:
    return json.loads((TOKENIZER_ASSETS / "parity.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {name: Tokenizer.from_file(TOKENIZER_ASSETS / name / "bpe.model") for name in MODELS}


@pytest.fixture(scope="module")
def ru(tokenizers) -> Tokenizer:
    return tokenizers["yttm-ru-5000"]


def _assert_same(ours: list, expected: list, texts: list, what: str) -> None:
    assert len(ours) == len(expected)
    wrong = [i for i, (a, b) in enumerate(zip(ours, expected, strict=True)) if a != b]
    assert not wrong, f"{what}: {len(wrong)} of {len(expected)} differ, e.g. " + "; ".join(
        f"{texts[i]!r}: ours {ours[i]} youtokentome {expected[i]}" for i in wrong[:3]
    )


# Parity with youtokentome (recorded) ----------------------------------------------------------------------------
def test_parity_fixture_covers_the_required_strings(parity):
    texts = parity["texts"]
    assert len(texts) >= 2000 and len(set(texts)) > 1900
    assert "" in texts and any("блюдо: борщ; белков: 12.5" in t for t in texts)
    for needle in (" ", "\t", "\n", "\r", "\u2581", "\xa0", "\u3000", "😀", "中", "ё", "7", ".", ",", "\x00"):
        assert sum(needle in t for t in texts) > 10, needle
    assert any(t != t.strip() for t in texts) and any("  " in t for t in texts)
    assert set(parity["models"]) == set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_encode_matches_youtokentome(parity, tokenizers, name):
    expected = parity["models"][name]
    tokenizer = tokenizers[name]
    assert tokenizer.vocab_size == expected["vocab_size"]
    _assert_same(tokenizer.encode(parity["texts"]), expected["ids"], parity["texts"], f"{name} batch")
    fresh = Tokenizer(tokenizer.model, cache_size=0)  # no cache: every word through the merge loop, one text a call
    _assert_same([fresh.encode(text) for text in parity["texts"]], expected["ids"], parity["texts"], f"{name} single")


@pytest.mark.parametrize("name", MODELS)
def test_decode_matches_youtokentome(parity, tokenizers, name):
    expected = parity["models"][name]
    tokenizer = tokenizers[name]
    ids = expected["ids"][: len(expected["decoded_text"])]
    texts = parity["texts"][: len(ids)]
    ours = [tokenizer.decode_text([tokenizer.bos_id, *row, tokenizer.eos_id]) for row in ids]
    _assert_same(ours, expected["decoded_text"], texts, f"{name} decode_text")
    _assert_same([tokenizer.decode(row) for row in ids], expected["decoded_raw"], texts, f"{name} decode")
    rows = expected["random_ids"]
    _assert_same([tokenizer.decode(row) for row in rows], expected["random_decoded_raw"], rows, f"{name} random")
    ours = [tokenizer.decode(row, ignore_ids=(0, 1, 2, 3)) for row in rows]
    _assert_same(ours, expected["random_decoded_text"], rows, f"{name} random ignore")


@pytest.mark.parametrize("name", MODELS)
def test_vocabulary_matches_youtokentome(parity, tokenizers, name):
    expected = parity["models"][name]
    tokenizer = tokenizers[name]
    assert tokenizer.vocab() == expected["vocab"]
    assert [tokenizer.id_to_subword(i) for i in range(tokenizer.vocab_size)] == expected["vocab"]
    for probe, token_id in expected["subword_to_id"]:
        assert tokenizer.subword_to_id(probe) == token_id, probe


def test_dropout_replays_youtokentome_random_stream(parity, tokenizers):
    """One stream across models, probabilities and texts, in the order the fixture script drew them."""
    dropout = parity["dropout"]
    rng = YttmRandom()
    for name, by_prob in dropout["ids"].items():
        for prob in dropout["probs"]:
            ours = [tokenizers[name].encode(text, dropout=prob, rng=rng) for text in dropout["texts"]]
            _assert_same(ours, by_prob[str(prob)], dropout["texts"], f"{name} dropout {prob}")


def test_trainer_reproduces_the_committed_model():
    """ours-captions/bpe.model (whose youtokentome ids are in the fixture) is what `train_tokenizer` makes."""
    tokenizer = train_tokenizer(fixtures_script.caption_texts(2, 1000), 500)
    assert tokenizer.model.to_text() == (TOKENIZER_ASSETS / "ours-captions" / "bpe.model").read_text()


# Words and whitespace ---------------------------------------------------------------------------------------------
def test_split_words_uses_youtokentome_whitespace_for_every_character():
    candidates = [chr(c) for c in range(0x110000) if chr(c).isspace() or chr(c) in YTTM_SPACES]
    assert len(candidates) == 30
    for char in candidates:
        inner, padded = f"а{char}б", f"{char}а{char}{char}б{char}"
        splits = char in YTTM_SPACES
        assert split_words(inner) == (["а", "б"] if splits else [inner]), hex(ord(char))
        assert split_words(padded) == (["а", "б"] if splits else [padded]), hex(ord(char))
    assert YTTM_SPACES == "\t\n\x0b\x0c\r \u2581"


def test_whitespace_never_makes_ids(ru):
    assert ru.encode("") == [] and ru.encode(" \t\n\r\x0b\x0c\u2581 ") == []
    assert ru.encode("  борщ\t\tи\nщи  ") == ru.encode("борщ и щи") == ru.encode("борщ\u2581и\u2581щи")
    assert ru.encode("борщ\xa0щи") != ru.encode("борщ щи")  # NBSP is a character to youtokentome


def test_unknown_character_run_is_one_unk(ru):
    ids = ru.encode("а中文字б")
    assert ids.count(ru.unk_id) == 1 and ru.decode(ids) == "а<UNK>б" and ru.decode_text(ids) == "аб"
    assert ru.encode("中") == [ru.subword_to_id(SPACE_SYMBOL), ru.unk_id]


# The wrapper: fixed-length tensors and decode_text -------------------------------------------------------------------
def test_encode_text_adds_bos_eos_and_pads(ru):
    ids = ru.encode("блюдо: борщ;")
    encoded = ru.encode_text("блюдо: борщ;", 16)
    assert encoded.dtype == torch.long and encoded.shape == (16,)
    assert encoded.tolist() == [2, *ids, 3] + [0] * (14 - len(ids))
    assert ru.encode_text("", 4).tolist() == [2, 3, 0, 0]


def test_encode_text_truncates_and_loses_eos_like_the_wrapper(ru):
    ids = ru.encode("блюдо: борщ; белков: 12.5; жиров: 3,4;")
    assert ru.encode_text("блюдо: борщ; белков: 12.5; жиров: 3,4;", 5).tolist() == [2, *ids[:4]]
    assert ru.encode_text("блюдо: борщ; белков: 12.5; жиров: 3,4;", len(ids) + 2).tolist() == [2, *ids, 3]
    assert ru.encode_text("борщ", 1).tolist() == [2]
    with pytest.raises(ValueError, match="length"):
        ru.encode_text("борщ", 0)


def test_fixed_length_at_every_cut(ru):
    text = "блюдо: борщ; белков: 12.5;"
    ids = ru.encode(text)
    for length in range(1, len(ids) + 5):
        expected = ([2, *ids, 3] + [0] * length)[:length] if length >= len(ids) + 2 else [2, *ids][:length]
        assert ru.encode_text(text, length).tolist() == expected, length
        assert ru.encode_batch([text, "", text], length).tolist() == [
            expected,
            ru.encode_text("", length).tolist(),
            expected,
        ]


def test_encode_batch_stacks_encode_text(ru):
    texts = fixtures_script.caption_texts(5, 20) + ["", "очень длинный текст " * 20]
    batch = ru.encode_batch(texts, 32)
    assert batch.shape == (22, 32) and batch.dtype == torch.long
    assert torch.equal(batch, torch.stack([ru.encode_text(t, 32) for t in texts]))
    assert ru.encode_batch([], 8).shape == (0, 8)
    with pytest.raises(TypeError, match="sequence of texts"):
        ru.encode_batch("борщ", 8)


def test_decode_text_round_trips_normalized_captions(ru, tokenizers):
    texts = [normalize_text("  " + t.upper() + " ") for t in fixtures_script.caption_texts(6, 50)]
    assert texts[0] == texts[0].lower().strip()
    for tokenizer in (ru, tokenizers["yttm-captions"], tokenizers["ours-captions"]):
        batch = tokenizer.encode_batch(texts, 128)
        assert tokenizer.decode_batch(batch) == texts
        assert [tokenizer.decode_text(row) for row in batch] == texts


def test_decode_rules(ru):
    space = ru.subword_to_id(SPACE_SYMBOL)
    assert ru.decode([space, space, ru.subword_to_id("н")]) == " н"  # only the first leading space goes
    assert ru.decode([0, 2, space]) == "<PAD><BOS> "
    assert ru.decode([0, 2, space], ignore_ids=[0, 2]) == ""
    assert ru.decode(torch.tensor([2, 3])) == "<BOS><EOS>" and ru.decode([]) == ""
    for bad in (-1, ru.vocab_size):
        with pytest.raises(ValueError, match="id must be in the range"):
            ru.decode([bad])
    assert ru.decode([ru.vocab_size], ignore_ids=[ru.vocab_size]) == ""
    with pytest.raises(TypeError, match="one sequence"):
        ru.decode([[2, 3]])
    with pytest.raises(TypeError, match="decode_text for one sequence"):
        ru.decode_batch(torch.tensor([2, 3]))
    assert ru.decode_batch([]) == [] and ru.decode_batch(torch.zeros((2, 3), dtype=torch.long)) == ["", ""]


def test_special_tokens_and_vocabulary(ru):
    assert (ru.pad_id, ru.unk_id, ru.bos_id, ru.eos_id) == (0, 1, 2, 3)
    assert len(ru) == ru.vocab_size == 5000
    assert [ru.id_to_subword(i) for i in range(4)] == ["<PAD>", "<UNK>", "<BOS>", "<EOS>"]
    assert ru.subword_to_id("no such subword") == ru.unk_id
    with pytest.raises(ValueError, match="id must be in the range"):
        ru.id_to_subword(5000)


# BPE-dropout ------------------------------------------------------------------------------------------------------
def test_dropout_zero_is_the_plain_encoding_and_one_gives_characters(ru):
    texts = fixtures_script.parity_texts(3, 200)
    rng = random.Random(0)
    assert ru.encode(texts, dropout=0.0, rng=rng) == ru.encode(texts)
    space = ru.subword_to_id(SPACE_SYMBOL)
    for text in texts:
        characters = []
        for word in split_words(text):
            characters.append(space)
            for char in word:
                token = ru.subword_to_id(char)
                if token != ru.unk_id or characters[-1] != ru.unk_id:
                    characters.append(token)
        assert ru.encode(text, dropout=1.0, rng=rng) == characters, text


def test_dropout_is_reproducible_and_changes_segmentation(ru):
    texts = fixtures_script.caption_texts(7, 100)
    first = ru.encode(texts, dropout=0.3, rng=random.Random(1))
    assert first == ru.encode(texts, dropout=0.3, rng=random.Random(1))
    assert first != ru.encode(texts, dropout=0.3, rng=random.Random(2))
    plain, full = ru.encode(texts), ru.encode(texts, dropout=1.0)
    lengths = [sum(map(len, ids)) for ids in (plain, first, full)]
    assert lengths[0] < lengths[1] < lengths[2]
    assert [ru.decode(ids) for ids in first] == [ru.decode(ids) for ids in plain]  # same text, other pieces
    random.seed(5)
    seeded = ru.encode_text(texts[0], 64, bpe_dropout=0.5)
    random.seed(5)
    assert torch.equal(seeded, ru.encode_text(texts[0], 64, bpe_dropout=0.5))
    with pytest.raises(ValueError, match="dropout"):
        ru.encode("борщ", dropout=1.5)


# Files, loading, pickling -------------------------------------------------------------------------------------
def test_save_and_reload_give_the_same_file_and_ids(ru, tmp_path):
    path = ru.save(tmp_path / "bpe.model")
    assert BpeModel.from_file(path) == BpeModel.from_file(TOKENIZER_ASSETS / "yttm-ru-5000" / "bpe.model")
    again = load_tokenizer(tmp_path)  # a folder holding bpe.model
    texts = fixtures_script.parity_texts(4, 100)
    assert again.encode(texts) == ru.encode(texts) and again.vocab() == ru.vocab()
    clone = pickle.loads(pickle.dumps(ru))
    assert clone.encode(texts) == ru.encode(texts) and len(pickle.dumps(ru)) < 200_000


def test_load_tokenizer_resolves_the_hub_name(monkeypatch, tmp_path):
    calls = []

    def fake_resolve(hub, **kwargs):
        calls.append((hub, kwargs))
        return TOKENIZER_ASSETS / "yttm-ru-5000" / "bpe.model"

    monkeypatch.setattr("rudolph_ft.tokenizer.resolve_file", fake_resolve)
    assert load_tokenizer("rudalle", cache_dir=tmp_path, offline=True).vocab_size == 5000
    assert calls == [
        (TOKENIZER_FILES["rudalle"], {"cache_dir": tmp_path, "offline": True, "what": "rudalle tokenizer"})
    ]


def test_load_tokenizer_offline_without_cache_says_what_to_do(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="shonenkov/rudalle-utils.*bpe.model"):
        load_tokenizer("rudalle", cache_dir=tmp_path, offline=True)


def test_load_tokenizer_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing bpe.model"):
        load_tokenizer(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="folder has no bpe.model"):
        load_tokenizer(tmp_path)
    good = (TOKENIZER_ASSETS / "ours-captions" / "bpe.model").read_text()
    numbers = good.split()
    bad_files = {
        "text.model": ("hello world\n", "non-integer"),
        "binary.model": (None, "not a text file"),
        "empty.model": ("", "header"),
        "truncated.model": (good[: len(good) // 2], "truncated"),
        "no_space.model": (good.replace("\n9601 ", "\n9602 ", 1), r"U\+2581"),
        "bad_rule.model": (" ".join(numbers[:-7] + ["4999", "5", "500"] + numbers[-4:]), r"rule 442 \(4999 5 500\)"),
        "bad_ids.model": (" ".join(numbers[:-4] + ["1", "0", "2", "7"]), "0..vocab_size-1"),
    }
    for name, (content, message) in bad_files.items():
        path = tmp_path / name
        path.write_bytes(b"\xff\xfe\x00" if content is None else content.encode())
        with pytest.raises(TokenizerFileError, match=message) as info:
            load_tokenizer(path)
        assert str(path) in str(info.value) and "not a YouTokenToMe BPE model" in str(info.value)


# Trainer ------------------------------------------------------------------------------------------------------
def test_trainer_learns_a_usable_vocabulary(tmp_path):
    captions = fixtures_script.caption_texts(8, 2000)
    tokenizer = train_tokenizer(captions, 300, tmp_path / "bpe.model")  # speed: benchmarks/bench_tokenizer.py
    assert tokenizer.vocab_size == 300 and Tokenizer.from_file(tmp_path / "bpe.model").vocab() == tokenizer.vocab()
    vocab = tokenizer.vocab()
    assert vocab[:5] == ["<PAD>", "<UNK>", "<BOS>", "<EOS>", SPACE_SYMBOL]
    assert "▁блюдо:" in vocab and "▁ккал:" in vocab  # the most frequent words become single ids
    ids = tokenizer.encode(captions)
    assert sum(map(len, ids)) < 0.4 * sum(map(len, captions))
    assert tokenizer.decode_batch(tokenizer.encode_batch(captions, 128)) == captions
    assert tokenizer.unk_id not in {i for row in ids for i in row}


def test_split_digits_keeps_numbers_digit_by_digit():
    """split_digits: no learned token holds a digit, so a number is encoded (by the unchanged YTTM encoder, from the
    file alone) one digit at a time, while words merge as before; the default merges digits like any characters."""
    captions = fixtures_script.caption_texts(8, 2000)
    merged, split = train_tokenizer(captions, 300), train_tokenizer(captions, 300, split_digits=True)
    assert any(len(piece) > 1 and any(c.isdigit() for c in piece) for piece in merged.vocab())  # e.g. «54»
    assert not any(len(piece.lstrip(SPACE_SYMBOL)) > 1 and any(c.isdigit() for c in piece) for piece in split.vocab())
    assert "▁блюдо:" in split.vocab() and "▁ккал:" in split.vocab()
    ids = split.encode("ккал: 548;")
    assert [split.id_to_subword(i) for i in ids][-4:] == ["5", "4", "8", ";"]
    assert split.decode_batch(split.encode_batch(captions, 128)) == captions
    assert split.unk_id not in {i for row in split.encode(captions) for i in row}


def test_trainer_options_and_errors():
    texts = ["аааа бббб вв г"] * 5 + ["д"]
    with pytest.warns(UserWarning, match="only .* merges"):
        small = train_tokenizer(texts, 100)
    assert small.vocab_size < 100
    dropped = train_tokenizer(texts, 12, coverage=0.9)
    assert "д" not in dropped.model.chars and dropped.encode("д") == [4, 1]
    custom = train_tokenizer(texts, 15, pad_id=-1, unk_id=0, bos_id=-1, eos_id=-1)
    assert custom.vocab()[0] == "<UNK>" and custom.vocab()[1] == SPACE_SYMBOL and custom.vocab_size == 15
    assert [custom.subword_to_id(name) for name in ("<PAD>", "<UNK>", "<BOS>", "<EOS>")] == [-1, 0, -1, -1]
    with pytest.raises(ValueError, match="no <PAD>, <BOS> or <EOS>"):
        custom.encode_text("а", 4)
    with pytest.raises(ValueError, match="vocab_size >= 10"):
        train_tokenizer(texts, 9)
    with pytest.raises(ValueError, match="special ids must differ"):
        train_tokenizer(texts, 20, bos_id=1)
    with pytest.raises(ValueError, match="coverage"):
        train_tokenizer(texts, 20, coverage=0)
    with pytest.raises(ValueError, match="no characters"):
        train_tokenizer(["  ", "\n"], 20)


def test_bpe_model_checks_consistency():
    with pytest.raises(ValueError, match="U\\+2581"):
        Tokenizer(BpeModel({"а": 4}, ()))


# Live parity (reference env) --------------------------------------------------------------------------------------
@pytest.mark.reference
def test_live_parity_on_fresh_random_strings(tmp_path):
    python = reference_python()
    seed = int.from_bytes(os.urandom(4), "little")
    texts = fixtures_script.parity_texts(seed, 1500)[len(fixtures_script.EDGE_CASES) :]
    captions = fixtures_script.caption_texts(seed, 1500)
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    (tmp_path / "captions.json").write_text(json.dumps(captions), encoding="utf-8")

    def run(*args):
        subprocess.run([python, str(SCRIPT), *args], check=True, capture_output=True, timeout=300)

    captions_json = str(tmp_path / "captions.json")
    run("train", "--texts", captions_json, "--vocab-size", "700", "--out", str(tmp_path / "y.model"))
    odd_ids = ("--special-ids", "7", "3", "0", "12")  # pad, unk, bos, eos where ordinary tokens would be
    run("train", "--texts", captions_json, "--vocab-size", "300", "--out", str(tmp_path / "y_odd.model"), *odd_ids)
    train_tokenizer(captions, 700, tmp_path / "o.model")
    train_tokenizer(captions, 300, tmp_path / "o_odd.model", pad_id=-1, unk_id=5, bos_id=-1, eos_id=0)
    fresh = ["y.model", "y_odd.model", "o.model", "o_odd.model"]
    models = [TOKENIZER_ASSETS / name / "bpe.model" for name in MODELS] + [tmp_path / name for name in fresh]
    model_args = [arg for path in models for arg in ("--model", str(path))]
    run("encode", *model_args, "--texts", str(tmp_path / "texts.json"), "--out", str(tmp_path / "expected.json"))
    run("dropout", *model_args, "--texts", str(tmp_path / "texts.json"), "--out", str(tmp_path / "dropout.json"))
    expected = json.loads((tmp_path / "expected.json").read_text(encoding="utf-8"))
    dropout = json.loads((tmp_path / "dropout.json").read_text(encoding="utf-8"))
    rng = YttmRandom()
    for path in models:
        tokenizer, want = Tokenizer.from_file(path), expected[str(path)]
        context = f"seed {seed}, {path}"
        _assert_same(tokenizer.encode(texts), want["ids"], texts, context)
        ids = want["ids"][: len(want["decoded_raw"])]
        _assert_same([tokenizer.decode(row) for row in ids], want["decoded_raw"], texts, context + " decode")
        assert tokenizer.vocab() == want["vocab"], context
        assert [[probe, tokenizer.subword_to_id(probe)] for probe, _ in want["subword_to_id"]] == want["subword_to_id"]
        for prob, rows in dropout[str(path)].items():
            ours = [tokenizer.encode(text, dropout=float(prob), rng=rng) for text in texts]
            _assert_same(ours, rows, texts, f"{context} dropout {prob}")
