"""Text tokenizer throughput: rudolph_ft's pure-Python `Tokenizer` vs youtokentome 1.0.6 (C++), same model, same ids.

    python benchmarks/bench_tokenizer.py                 # 100k captions, table
    python benchmarks/bench_tokenizer.py --json          # one JSON object (ratios included)
    python benchmarks/bench_tokenizer.py --model rudalle --ref-python .venv-ref/bin/python

youtokentome runs in the reference env (`--ref-python`, default $RUDOLPH_REF_PYTHON or /work/.venv-ref/bin/python)
in a subprocess, with its default threads (all cores) and with one thread. Workloads:
- captions -> ids: `encode(captions)` vs `yttm.BPE.encode(captions)`: deterministic caption-like strings in the
  article's format (`caption_texts` of scripts/make_tokenizer_fixtures.py).
- captions -> (N, 64) tensor: `encode_batch(captions, 64)` vs ruDALL-E's `YTTMTokenizerWrapper.encode_text` per
  caption + `torch.stack` (how the reference datasets build batches).
- random words -> ids: strings of random Cyrillic "words" that never repeat, the worst case for our word cache.
Each of our runs starts from a new `Tokenizer` (empty cache). Times are the best of `--repeats` runs (the least
disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "tests" / "assets" / "tokenizer" / "yttm-ru-5000" / "bpe.model"
LENGTH = 64  # RuDOLPH-350M's right-text length

# Runs in the reference env: argv = model, texts.json, repeats, threads, length; prints seconds and digests.
REFERENCE_CODE = r"""
import hashlib, json, sys, time
import torch, youtokentome as yttm
from rudalle.tokenizer import YTTMTokenizerWrapper
model, texts_path, repeats, threads, length = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
workloads = json.load(open(texts_path, encoding="utf-8"))
bpe = yttm.BPE(model, n_threads=threads)
wrapper = YTTMTokenizerWrapper(bpe)
result = {"seconds": {}, "digests": {}}
def timed(name, run):
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter(); out = run(); seconds.append(time.perf_counter() - start)
    result["seconds"][name] = seconds
    result["digests"][name] = hashlib.sha256(json.dumps(out).encode()).hexdigest()
timed("captions -> ids", lambda: bpe.encode(workloads["captions"], output_type=yttm.OutputType.ID))
timed("random words -> ids", lambda: bpe.encode(workloads["random"], output_type=yttm.OutputType.ID))
timed("captions -> (N, 64) tensor",
      lambda: torch.stack([wrapper.encode_text(t, length) for t in workloads["captions"]]).tolist())
print(json.dumps(result))
"""


def caption_texts(seed: int, count: int) -> list[str]:
    """The fixture script's caption generator (one definition for tests, fixtures and this benchmark)."""
    spec = importlib.util.spec_from_file_location(
        "make_tokenizer_fixtures", REPO / "scripts/make_tokenizer_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.caption_texts(seed, count)


def random_word_texts(seed: int, count: int) -> list[str]:
    """Strings of 4-10 random Cyrillic words of 2-9 letters: nearly every word is new (cold cache)."""
    rng = random.Random(seed)
    letters = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
    words = lambda: " ".join("".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(rng.randint(4, 10)))
    return [words() for _ in range(count)]


def digest(values) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


def run_ours(model: str, workloads: dict[str, list[str]], repeats: int) -> dict:
    """Seconds per run and result digests of rudolph_ft's tokenizer, a fresh one (empty cache) per run."""
    from rudolph_ft.tokenizer import load_tokenizer

    jobs = {
        "captions -> ids": lambda tok: tok.encode(workloads["captions"]),
        "random words -> ids": lambda tok: tok.encode(workloads["random"]),
        "captions -> (N, 64) tensor": lambda tok: tok.encode_batch(workloads["captions"], LENGTH),
    }
    result = {"seconds": {}, "digests": {}}
    for name, job in jobs.items():
        seconds = []
        for _ in range(repeats):
            tokenizer = load_tokenizer(model)
            start = time.perf_counter()
            out = job(tokenizer)
            seconds.append(time.perf_counter() - start)
        result["seconds"][name] = seconds
        result["digests"][name] = digest(out.tolist() if hasattr(out, "tolist") else out)
    return result


def run_reference(python: str, model: str, workloads: dict, repeats: int, threads: int) -> dict:
    """The same workloads with youtokentome (and rudalle's wrapper) in the reference env."""
    with tempfile.TemporaryDirectory() as tmp:
        texts = Path(tmp) / "texts.json"
        texts.write_text(json.dumps(workloads, ensure_ascii=False), encoding="utf-8")
        args = [python, "-c", REFERENCE_CODE, model, str(texts), str(repeats), str(threads), str(LENGTH)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"reference run failed ({python}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(workloads: dict, ours: dict, ref_all: dict, ref_one: dict) -> dict:
    """Texts/s per workload and implementation, ratios vs youtokentome's default (all cores)."""
    sizes = {"captions -> ids": len(workloads["captions"]), "random words -> ids": len(workloads["random"])}
    sizes["captions -> (N, 64) tensor"] = len(workloads["captions"])
    rows = {}
    for name, size in sizes.items():
        rate = {
            label: size / min(res["seconds"][name])
            for label, res in (("ours", ours), ("youtokentome", ref_all), ("youtokentome_1_thread", ref_one))
        }
        rows[name] = {
            "texts": size,
            "texts_per_s": {label: round(value) for label, value in rate.items()},
            "ratio": round(rate["ours"] / rate["youtokentome"], 2),
            "ratio_vs_1_thread": round(rate["ours"] / rate["youtokentome_1_thread"], 2),
            "identical_ids": ours["digests"][name] == ref_all["digests"][name] == ref_one["digests"][name],
        }
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of captions (random strings: n / 5)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="bpe.model path or tokenizer name (rudalle)")
    default_ref = os.environ.get("RUDOLPH_REF_PYTHON") or "/work/.venv-ref/bin/python"
    parser.add_argument("--ref-python", default=default_ref, help="python of the reference env (youtokentome)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    from rudolph_ft.tokenizer import tokenizer_file

    model_path = str(tokenizer_file(args.model))
    workloads = {"captions": caption_texts(0, args.n), "random": random_word_texts(0, max(args.n // 5, 1))}
    ours = run_ours(model_path, workloads, args.repeats)
    ref_all = run_reference(args.ref_python, model_path, workloads, args.repeats, threads=-1)
    ref_one = run_reference(args.ref_python, model_path, workloads, args.repeats, threads=1)
    rows = summarize(workloads, ours, ref_all, ref_one)
    report = {
        "model": model_path,
        "cpu_count": os.cpu_count(),
        "workloads": rows,
        "ratio": rows["captions -> ids"]["ratio"],  # the headline: captions/s ours / youtokentome (all cores)
        "captions_per_s": rows["captions -> ids"]["texts_per_s"],
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"model {model_path}; {os.cpu_count()} CPUs; best of {args.repeats} runs; ours starts each run cold")
    header = f"{'workload':<28} {'texts':>7} {'ours/s':>10} {'yttm/s':>10} {'yttm 1T/s':>10} {'ratio':>6} {'vs 1T':>6}"
    print(header + "  same ids")
    for name, row in rows.items():
        rate = row["texts_per_s"]
        print(
            f"{name:<28} {row['texts']:>7} {rate['ours']:>10,} {rate['youtokentome']:>10,} "
            f"{rate['youtokentome_1_thread']:>10,} {row['ratio']:>6.2f} {row['ratio_vs_1_thread']:>6.2f}  "
            f"{'yes' if row['identical_ids'] else 'NO'}"
        )


if __name__ == "__main__":
    sys.exit(main())
