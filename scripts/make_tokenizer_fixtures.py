"""Expected ids of youtokentome 1.0.6 for the text-tokenizer parity tests. Run it with the reference env's python.

    .venv-ref/bin/python scripts/make_tokenizer_fixtures.py          # rewrites tests/assets/tokenizer/

Writes, under tests/assets/tokenizer/:
- yttm-ru-5000/: a real third-party 5,000-id Russian model, with its licence and source (copied from --ru-model).
- yttm-captions/bpe.model: a model youtokentome trained on caption-like text (`caption_texts(1, 3000)`, 600 ids);
  kept as committed unless --retrain (youtokentome's training is not deterministic).
- ours-captions/bpe.model: a model rudolph_ft's `train_tokenizer` learns from `caption_texts(2, 1000)`. This is the
  only use of rudolph_ft here (to make that file); every expected id below comes from youtokentome.
- parity.json: `parity_texts(0, 2400)` and, per model, youtokentome's ids, decoded texts, vocabulary,
  `subword_to_id` answers and decodings of random id sequences; plus BPE-dropout ids drawn in a fresh process
  (youtokentome's process-wide std::mt19937 then starts from its default seed, so the draws can be replayed).

Subcommands, used by the live test `pytest -m reference tests/test_tokenizer.py` (they import youtokentome only):
    ... encode --model M [--model M2 ...] --texts texts.json --out expected.json
    ... dropout --model M [...] --texts texts.json --probs 0.1 0.5 --out dropout.json   (run in a fresh process)
    ... train --texts texts.json --vocab-size N --out bpe.model [--special-ids PAD UNK BOS EOS]

`parity_texts` and `caption_texts` are imported by the tests (string generators, no youtokentome needed).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "tests" / "assets" / "tokenizer"
MODELS = ("yttm-ru-5000", "yttm-captions", "ours-captions")
SPECIAL_IDS = (0, 1, 2, 3)  # pad, unk, bos, eos: what the wrapper's decode_text ignores
DROPOUT_PROBS = (0.1, 0.5, 1.0)
DECODED_COUNT = 1200  # texts whose decodings are stored (all texts' ids are)

# String material ---------------------------------------------------------------------------------------------------
# fmt: off
RU_LOWER = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
RU_WORDS = (
    "блюдо борщ щи суп салат оливье котлета пюре картофель гречка рис плов паста макароны сыр творог блины "
    "пельмени вареники хлеб масло молоко кефир яйцо омлет каша овсянка курица говядина свинина рыба лосось "
    "сельдь шуба винегрет окрошка солянка рассольник уха шаурма лаваш ветчина грибы капуста свёкла морковь лук "
    "чеснок укроп сметана майонез кетчуп соус торт пирог пирожок ватрушка сырники компот чай кофе какао "
    "белков жиров углеводов ккал калорий грамм порция вкусно очень немного большой маленький горячий холодный "
    "и в на с по для из от до не это как что где когда почему привет мир дом кот собака человек время год день "
    "ночь утро вечер сегодня завтра вчера хорошо плохо быстро медленно ёлка ёжик объявление подъезд съешь ещё "
    "этих мягких французских булок да выпей же чаю"
).split()
EN_WORDS = (
    "the quick brown fox jumps over lazy dog pasta pizza burger salad soup cheese bread coffee tea menu "
    "calories protein fat carbs kcal Moscow RuDOLPH ruDALL-E BPE token GPU CPU ok OK Hello World iPhone"
).split()
DISHES = (
    "борщ", "борщ со сметаной", "щи из квашеной капусты", "плов с бараниной", "салат оливье", "винегрет",
    "котлета по-киевски", "пюре картофельное", "гречка с грибами", "блины с творогом", "сырники", "окрошка на кефире",
    "паста карбонара", "пицца маргарита", "шаурма", "лаваш с ветчиной и сыром", "уха", "солянка сборная",
    "пельмени", "вареники с вишней", "омлет", "овсянка на молоке", "куриный суп с лапшой", "сельдь под шубой",
    "торт наполеон", "пирожок с капустой", "рис с овощами", "лосось на гриле", "caesar salad", "суп-пюре из тыквы",
)
PUNCT = string.punctuation + "«»—–…№°·‘’“”„"
SPACES = " \t\n\r\x0b\x0c\u2581"  # youtokentome's whitespace
NOT_SPACES = "\xa0\u2003\u3000\x1c\x1d\x1e\x1f\x85\u2028\u2029\u202f\u200b\ufeff\u1680\u205f"  # whitespace to Python
EMOJI = ("😀", "🍲", "🥟", "👍🏽", "❤️", "🇷🇺", "👨‍👩‍👧", "🍕", "☕", "✨")
OTHER_SCRIPTS = (
    "中文", "漢字", "日本語", "한국어", "ελληνικά", "עברית", "العربية", "हिन्दी", "ქართული", "Ωμέγα", "Straße",
)
ODD_CHARS = ("\x00", "\x01", "\x07", "\x1b", "\x7f", "и\u0306", "e\u0301", "\ufffd", "\U0001d11e")
EDGE_CASES = (
    "", " ", "  ", "\t", "\n", "\r\n", " \t\n\r\x0b\x0c ", "\u2581", "\u2581\u2581", "\u2581а", "а\u2581б",
    "а \u2581 б",
    "<UNK>", "<PAD>", "<BOS> привет <EOS>", "а", "я", "ё", "Ё", ".", "..", "...", "а.", " а", "а ", "  а  б  ",
    "\tа\tб\t", "\nа\nб\n", "а\r\nб", "\xa0", "а\xa0б", "\u3000а\u3000", "😀", "😀😀", "中", "中文 中文", "1", "12.5",
    "3,4", "-0.001", "1e-3", "100500", "блюдо: борщ; белков: 12.5; жиров: 3,4; углеводов: 20; ккал: 250;",
)
# fmt: on


def caption_text(rng: random.Random) -> str:
    """One caption in the article's format (RECIPE §1), lower-cased, numbers as a CSV would hold them."""

    def number() -> str:
        value = rng.choice((rng.randint(0, 60), round(rng.uniform(0, 60), rng.choice((1, 2)))))
        return str(value).replace(".", rng.choice((".", ".", ","))) if isinstance(value, float) else str(value)

    return (
        f"блюдо: {rng.choice(DISHES)}; белков: {number()}; жиров: {number()}; углеводов: {number()}; "
        f"ккал: {rng.randint(20, 900)};"
    ).lower()


def caption_texts(seed: int, count: int) -> list[str]:
    """`count` caption-like strings, deterministic for a seed."""
    rng = random.Random(seed)
    return [caption_text(rng) for _ in range(count)]


def _words(rng: random.Random, pool, low: int, high: int) -> list[str]:
    return [rng.choice(pool) for _ in range(rng.randint(low, high))]


def _case(rng: random.Random, word: str) -> str:
    return rng.choice((word, word, word.capitalize(), word.upper()))


def _sentence(rng: random.Random) -> str:
    words = [_case(rng, w) for w in _words(rng, RU_WORDS, 1, 12)]
    return " ".join(w + rng.choice(("", "", "", ",", ".", "!", "?", ":", ";")) for w in words)


def _number(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(-(10**6), 10**9))
    if kind == 1:
        return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 5)}f}".replace(".", rng.choice(".,"))
    if kind == 2:
        unit = rng.choice(("%", "г", "кг", "мл"))
        return f"{rng.randint(0, 100)}{unit}"
    if kind == 3:
        return f"{rng.randint(1, 31):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2030)}"
    if kind == 4:
        return f"{rng.uniform(0, 1):.3e}"
    return "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 25)))


def _mixed(rng: random.Random) -> str:
    pools = [
        RU_LOWER,
        RU_LOWER.upper(),
        string.ascii_letters,
        string.digits,
        PUNCT,
        SPACES,
        NOT_SPACES,
        "".join(EMOJI),
        "".join(OTHER_SCRIPTS),
        "".join(ODD_CHARS),
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40)))


def _generators(rng: random.Random) -> list:
    """One function per kind of string; each returns a fresh string from `rng`."""
    join_ws = lambda ws: rng.choice(ws) * rng.randint(1, 3)
    return [
        lambda: _sentence(rng),
        lambda: " ".join(_case(rng, w) for w in _words(rng, EN_WORDS, 1, 10)),
        lambda: " ".join(_number(rng) for _ in range(rng.randint(1, 6))),
        lambda: " ".join(
            "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 8))) + rng.choice(("", *RU_WORDS))
            for _ in range(rng.randint(1, 5))
        ),
        lambda: rng.choice((*RU_LOWER, *"aZ0.!-_ ", "ab", "ой", "😀")) * rng.randint(2, 40),
        lambda: "".join(join_ws(SPACES) + w for w in _words(rng, RU_WORDS + EN_WORDS, 1, 8)) + join_ws(SPACES),
        lambda: join_ws(NOT_SPACES).join(_words(rng, RU_WORDS, 2, 6)) + rng.choice(("", NOT_SPACES[0])),
        lambda: " ".join(
            rng.choice((*_words(rng, RU_WORDS, 1, 2), *EMOJI, *OTHER_SCRIPTS, *ODD_CHARS))
            + rng.choice(("", *EMOJI, *OTHER_SCRIPTS))
            for _ in range(rng.randint(1, 6))
        ),
        lambda: caption_text(rng),
        lambda: caption_text(rng).upper() if rng.random() < 0.3 else "  " + caption_text(rng) + "\n",
        lambda: _mixed(rng),
    ]


def parity_texts(seed: int, count: int) -> list[str]:
    """`count` varied strings: the edge cases first, then a deterministic mix of every kind of `_generators`."""
    rng = random.Random(seed)
    generators = _generators(rng)
    texts = list(EDGE_CASES)
    while len(texts) < count:
        texts.append(generators[len(texts) % len(generators)]())
    return texts[:count]


# youtokentome side ---------------------------------------------------------------------------------------------------
def _yttm():
    import youtokentome

    return youtokentome


def yttm_expected(model_path: str | Path, texts: list[str], seed: int = 0) -> dict:
    """What youtokentome does with `texts` and a model: ids, decodings, vocabulary, subword lookups."""
    yttm = _yttm()
    bpe = yttm.BPE(model=str(model_path), n_threads=1)
    ids = bpe.encode(texts, output_type=yttm.OutputType.ID)
    vocab = bpe.vocab()
    rng = random.Random(seed)
    random_ids = [[rng.randrange(bpe.vocab_size()) for _ in range(rng.randint(0, 12))] for _ in range(300)]
    random_ids += [[rng.choice(SPECIAL_IDS)] + row for row in random_ids[:50]]
    probes = ["<UNK>", "<PAD>", "<BOS>", "<EOS>", "", " ", "\u2581", "\u2581\u2581", "zzzz", "борщ", "\u2581борщ"]
    probes += [rng.choice(vocab) for _ in range(100)]
    return {
        "vocab_size": bpe.vocab_size(),
        "ids": ids,
        "decoded_text": [bpe.decode([2] + row + [3], ignore_ids=SPECIAL_IDS)[0] for row in ids[:DECODED_COUNT]],
        "decoded_raw": [bpe.decode(row)[0] if row else "" for row in ids[:DECODED_COUNT]],
        "random_ids": random_ids,
        "random_decoded_raw": [bpe.decode(row)[0] if row else "" for row in random_ids],
        "random_decoded_text": [bpe.decode(row, ignore_ids=SPECIAL_IDS)[0] if row else "" for row in random_ids],
        "vocab": vocab,
        "subword_to_id": [[probe, bpe.subword_to_id(probe)] for probe in probes],
    }


def yttm_dropout(model_paths: list[str], texts: list[str], probs=DROPOUT_PROBS) -> dict:
    """Dropout ids, one text per call (one thread), models then probabilities then texts: replay in this order."""
    yttm = _yttm()
    result = {}
    for model_path in model_paths:
        bpe = yttm.BPE(model=str(model_path), n_threads=1)
        result[str(model_path)] = {str(p): [bpe.encode([t], dropout_prob=p)[0] for t in texts] for p in probs}
    return result


def yttm_train(texts: list[str], vocab_size: int, out: str | Path, special_ids=(0, 1, 2, 3)) -> None:
    """Train youtokentome on the texts (one per line, one thread); `special_ids`: pad, unk, bos, eos."""
    pad_id, unk_id, bos_id, eos_id = special_ids
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text("\n".join(texts) + "\n", encoding="utf-8")
        _yttm().BPE.train(
            data=str(data),
            model=str(out),
            vocab_size=vocab_size,
            n_threads=1,
            pad_id=pad_id,
            unk_id=unk_id,
            bos_id=bos_id,
            eos_id=eos_id,
        )


# Commands ------------------------------------------------------------------------------------------------------------
def _read_json(path: str) -> list:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _write_json(data, path: str | Path) -> None:
    Path(path).write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def _fresh_dropout(model_paths: list[Path], texts: list[str]) -> dict:
    """`yttm_dropout` in a new process (default random seed) via the `dropout` subcommand."""
    with tempfile.TemporaryDirectory() as tmp:
        texts_path, out = Path(tmp) / "texts.json", Path(tmp) / "dropout.json"
        _write_json(texts, texts_path)
        models = [arg for path in model_paths for arg in ("--model", str(path))]
        subprocess.run(
            [sys.executable, __file__, "dropout", *models, "--texts", str(texts_path), "--out", str(out)], check=True
        )
        by_path = json.loads(out.read_text(encoding="utf-8"))
    return {Path(path).parent.name: ids for path, ids in by_path.items()}


def make_all(ru_model: Path, count: int, retrain: bool = False) -> None:
    """Rewrite every fixture under tests/assets/tokenizer (see the module doc)."""
    ru_dir = ASSETS / "yttm-ru-5000"
    ru_dir.mkdir(parents=True, exist_ok=True)
    for name in ("bpe.model", "REPO_LICENSE", "SOURCE.txt"):
        if (ru_model.parent / name).resolve() != (ru_dir / name).resolve():
            shutil.copyfile(ru_model.parent / name, ru_dir / name)
    yttm_model = ASSETS / "yttm-captions" / "bpe.model"
    if retrain or not yttm_model.exists():  # youtokentome's training is not deterministic: keep the committed file
        yttm_model.parent.mkdir(exist_ok=True)
        yttm_train(caption_texts(1, 3000), 600, yttm_model)
    (ASSETS / "ours-captions").mkdir(exist_ok=True)
    sys.path.insert(0, str(REPO))
    from rudolph_ft.tokenizer import train_tokenizer  # makes the file only; its expected ids come from youtokentome

    train_tokenizer(caption_texts(2, 1000), 500, ASSETS / "ours-captions" / "bpe.model")
    texts = parity_texts(0, count)
    paths = [ASSETS / name / "bpe.model" for name in MODELS]
    fixture = {
        "youtokentome": importlib.metadata.version("youtokentome"),
        "texts": texts,
        "models": {path.parent.name: yttm_expected(path, texts) for path in paths},
        "dropout": {"probs": list(DROPOUT_PROBS), "texts": texts[:120], "ids": _fresh_dropout(paths, texts[:120])},
    }
    _write_json(fixture, ASSETS / "parity.json")
    size = (ASSETS / "parity.json").stat().st_size
    print(f"wrote {ASSETS / 'parity.json'} ({len(texts)} texts x {len(paths)} models, {size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ru-model",
        type=Path,
        default=ASSETS / "yttm-ru-5000" / "bpe.model",
        help="the third-party yttm-ru-5000 bpe.model, next to its REPO_LICENSE and SOURCE.txt (default: the copy "
        "already in tests/assets; the original is ../shared/assets/yttm-ru-5000/bpe.model)",
    )
    parser.add_argument("--count", type=int, default=2400, help="number of parity strings")
    parser.add_argument("--retrain", action="store_true", help="retrain yttm-captions (else the committed file)")
    commands = parser.add_subparsers(dest="command")
    for name in ("encode", "dropout"):
        sub = commands.add_parser(name)
        sub.add_argument("--model", action="append", required=True)
        sub.add_argument("--texts", required=True)
        sub.add_argument("--out", required=True)
        if name == "dropout":
            sub.add_argument("--probs", type=float, nargs="+", default=list(DROPOUT_PROBS))
    train = commands.add_parser("train")
    train.add_argument("--texts", required=True)
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", required=True)
    train.add_argument("--special-ids", type=int, nargs=4, default=[0, 1, 2, 3], metavar=("PAD", "UNK", "BOS", "EOS"))
    args = parser.parse_args(argv)
    if args.command == "encode":
        texts = _read_json(args.texts)
        _write_json({model: yttm_expected(model, texts) for model in args.model}, args.out)
    elif args.command == "dropout":
        _write_json(yttm_dropout(args.model, _read_json(args.texts), args.probs), args.out)
    elif args.command == "train":
        yttm_train(_read_json(args.texts), args.vocab_size, args.out, args.special_ids)
    else:
        make_all(args.ru_model, args.count, args.retrain)


if __name__ == "__main__":
    main()
