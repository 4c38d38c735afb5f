"""Captioning, reranking and zero-shot speed: rudolph-ft pipelines vs the article's `rudolph.pipelines` (rc4).

Same config (the 350M layout the article used, `350M_v1`, random weights, fp32), same image, template, sampling
settings and batch sizes; each measurement in a fresh process (this file re-runs itself as the worker):

    python benchmarks/bench_generate.py                          # CPU: captions n=16, rerank 4, zero-shot 8
    python benchmarks/bench_generate.py --json                   # one JSON object with the ratios
    python benchmarks/bench_generate.py --device cuda --no-reference

The reference runs in the rc4 reference env (`scripts/make-reference-env.sh .venv-ref-rc4 0.0.1rc4 0.5.0rc1`):
`--ref-python` or RUDOLPH_REF_PYTHON_RC4. Both sides use the VQGAN architecture with random weights and the
youtokentome model `tests/assets/tokenizer/yttm-ru-5000/bpe.model` (the official one needs a download).

Fairness: random weights rarely end a caption, and the reference always decodes every remaining right-text token,
so ours is timed with `stop_at_eos=False` (exactly the reference's number of tokens); "per token" rates divide by
generated tokens (captions x positions). Ours with early stopping (the default) is timed too: on random weights it
saves nothing; on a fine-tuned model a batch stops after its longest caption (see `early_stop_note` in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, cell, run_worker

THIS = Path(__file__).resolve()
DEFAULT_REF_PYTHON = os.environ.get("RUDOLPH_REF_PYTHON_RC4", str(ROOT / ".venv-ref-rc4" / "bin" / "python"))
TOKENIZER = ROOT / "tests" / "assets" / "tokenizer" / "yttm-ru-5000" / "bpe.model"
PHOTO = ROOT / "tests" / "assets" / "images" / "overhead_dish_1559845399.jpg"
TEMPLATE = "блюдо:"
SAMPLING = dict(top_k=16, top_p=0.6, temperature=0.8)  # the article's
CAPTIONS = ["блюдо: борщ; белков: 3.5; жиров: 4; углеводов: 6; ккал: 70;", "блюдо: плов; белков: 7; ккал: 250;",
            "блюдо: шаурма; ккал: 300;", "блюдо: салат оливье; белков: 5; жиров: 16; углеводов: 7; ккал: 198;"]
CLASSES = ["борщ", "шаурма", "плов", "пельмени", "салат оливье", "блины", "паста", "суп"]
TASKS = ("captions", "rerank", "zero_shot")


# ---- workers (one measurement per process) ------------------------------------------------------------------------
def _timed(run, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        info = run() or {}
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "times": times, **info}


def ours_worker(args) -> dict:
    import torch

    from rudolph_ft.components import Components
    from rudolph_ft.config import VQGAN_PRESETS, RuDolphConfig
    from rudolph_ft.data.images import load_image
    from rudolph_ft.model import RuDolph
    from rudolph_ft.model.vqgan import VQGAN
    from rudolph_ft.pipelines import generate_captions_batch, rerank_by_image, zero_shot_classify
    from rudolph_ft.tokenizer import Tokenizer

    device = torch.device(args.device)
    model = RuDolph(RuDolphConfig.from_preset(args.preset)).to(device).eval()
    components = Components(model, Tokenizer.from_file(TOKENIZER), VQGAN(VQGAN_PRESETS["sber-gumbel-f8"]).to(device))
    image = load_image(PHOTO)
    with torch.inference_mode():  # warm-up: one forward of the whole sequence
        model(torch.zeros(1, model.config.total_seq_length, dtype=torch.long, device=device))

    def captions(stop_at_eos: bool):
        samples = generate_captions_batch(components, [image], TEMPLATE, args.n, seed=43, batch_size=args.batch_size,
                                          stop_at_eos=stop_at_eos, **SAMPLING)[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        prefix = 1 + len(components.tokenizer.encode(TEMPLATE))  # bos + template: the rest is generated
        steps = int((samples.ids != 0).sum(1).max()) - prefix
        return {"captions": args.n, "tokens": args.n * (model.config.r_text_seq_length - prefix), "steps": steps,
                "positions": model.config.r_text_seq_length - prefix}

    if args.task == "captions":
        result = _timed(lambda: captions(False), args.repeats)
        result["early_stop"] = _timed(lambda: captions(True), args.repeats)
        return result
    if args.task == "rerank":
        return _timed(lambda: {"captions": len(rerank_by_image(components, CAPTIONS, image))}, args.repeats)
    return _timed(lambda: {"classes": len(zero_shot_classify(components, image, CLASSES, "{}").classes)},
                  args.repeats)


def reference_worker(args) -> dict:
    import torch
    import youtokentome as yttm
    from PIL import Image
    from rudalle.tokenizer import YTTMTokenizerWrapper
    from rudalle.vae import get_vae
    from rudolph import pipelines
    from rudolph.model import ruDolphModel

    from rudolph_ft.config import RuDolphConfig

    class Tokenizer(YTTMTokenizerWrapper):  # the small BPE cannot decode ids beyond its 5000: skip them
        def decode_text(self, encoded):
            return super().decode_text(encoded[encoded < self.vocab_size()])

    config = RuDolphConfig.from_preset(args.preset)
    fields = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "embedding_dropout_prob",
              "attention_dropout_prob", "output_dropout_prob", "l_text_seq_length", "r_text_seq_length",
              "kernel_size", "last_kernel_size", "image_tokens_per_dim", "image_vocab_size",
              "cogview_sandwich_layernorm", "cogview_pb_relax")
    model = ruDolphModel(device=args.device, **{f: getattr(config, f) for f in fields}).to(args.device).eval()
    vae = get_vae(pretrained=False).to(args.device)
    tokenizer = Tokenizer(yttm.BPE(model=str(TOKENIZER)))
    image = Image.open(PHOTO).convert("RGB")
    with torch.no_grad():  # warm-up: one forward of the whole sequence
        total = config.total_seq_length
        model(torch.zeros(1, total, dtype=torch.long), torch.tril(torch.ones(1, 1, total, total)))

    if args.task == "captions":
        def run():
            pipelines.generate_captions(image, tokenizer, model, vae, template=TEMPLATE, captions_num=args.n,
                                        bs=args.batch_size, seed=43, limit_eos=False, **SAMPLING)
            prefix = 1 + len(tokenizer.tokenizer.encode([TEMPLATE])[0])  # bos + template, as its loop counts
            return {"captions": args.n, "tokens": args.n * (config.r_text_seq_length - prefix)}
        return _timed(run, args.repeats)
    if args.task == "rerank":
        return _timed(lambda: pipelines.self_reranking_by_image(CAPTIONS, image, tokenizer, model, vae, bs=16)
                      and {"captions": len(CAPTIONS)}, args.repeats)
    return _timed(lambda: pipelines.zs_clf(image, CLASSES, model, tokenizer, vae, bs=8) and {"classes": 8},
                  args.repeats)


# ---- driver ---------------------------------------------------------------------------------------------------------
def measure(python: str, impl: str, task: str, args, repeats: int) -> dict:
    argv = ["--worker", impl, "--task", task, "--preset", args.preset, "--n", str(args.n), "--batch-size",
            str(args.batch_size), "--device", args.device, "--threads", str(args.threads), "--repeats", str(repeats)]
    return run_worker(python, THIS, argv)


def summarise(task: str, ours: dict, ref: dict) -> dict:
    row = {"task": task, "ours": ours, "reference": ref}
    if "seconds" in ours and "seconds" in ref:
        row["speedup"] = ref["seconds"] / ours["seconds"]
    if task == "captions":
        for name, result in (("ours", ours), ("reference", ref), ("ours_early_stop", ours.get("early_stop", {}))):
            if "seconds" in result:
                row[f"{name}_captions_per_s"] = result["captions"] / result["seconds"]
                row[f"{name}_tokens_per_s"] = result["tokens"] / result["seconds"]
    return row


def print_table(result: dict) -> None:
    print(f"RuDOLPH {result['preset']} pipelines, {result['device']}, {result['threads']} threads, random weights; "
          f"captions n={result['n']} batch {result['batch_size']}")
    header = f"{'task':<28} | {'ours s':>8} {'ref s':>8} | {'speedup':>8} | {'ours rate':>16} {'ref rate':>16}"
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        ours, ref = row["ours"], row["reference"]
        rates = ("", "")
        if row["task"] == "captions":
            rates = (f"{cell(row.get('ours_captions_per_s'), '8.3f')} capt/s",
                     f"{cell(row.get('reference_captions_per_s'), '8.3f')} capt/s")
        label = {"captions": "generate_captions (all tok.)", "rerank": "rerank_by_image (4 capt.)",
                 "zero_shot": "zero_shot_classify (8 cl.)"}[row["task"]]
        print(f"{label:<28} | {cell(ours.get('seconds'), '8.2f')} {cell(ref.get('seconds'), '8.2f')} | "
              f"{cell(row.get('speedup'), '7.1f')}x | {rates[0]:>16} {rates[1]:>16}")
        if row["task"] == "captions":
            early = ours.get("early_stop", {})
            print(f"{'  ours, early stop (default)':<28} | {cell(early.get('seconds'), '8.2f')} {'':>8} | {'':>8} | "
                  f"{cell(row.get('ours_early_stop_captions_per_s'), '8.3f')} capt/s  (stopped after "
                  f"{early.get('steps', '-')} of {early.get('positions', '-')} positions)")
            print(f"{'  per generated token':<28} | {'':>8} {'':>8} | {'':>8} | "
                  f"{cell(row.get('ours_tokens_per_s'), '8.1f')} tok/s  "
                  f"{cell(row.get('reference_tokens_per_s'), '8.1f')} tok/s")
    for row in result["rows"]:
        for side in ("ours", "reference"):
            if "error" in row[side]:
                print(f"{row['task']} {side}: {row[side]['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350M_v1", help="model config (random weights); rc4 builds no special "
                        "tokens, so the 350M layout without them")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--n", type=int, default=16, help="captions to generate")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median reported)")
    parser.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ref-python", default=DEFAULT_REF_PYTHON)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        worker = ours_worker if args.worker == "ours" else reference_worker
        print(json.dumps(worker(args)))
        return
    rows = []
    for task in args.tasks:
        ours = measure(sys.executable, "ours", task, args, args.repeats)
        ref = {"error": "skipped"} if args.no_reference else measure(args.ref_python, "reference", task, args,
                                                                     args.ref_repeats)
        rows.append(summarise(task, ours, ref))
    result = {"preset": args.preset, "device": args.device, "threads": args.threads, "n": args.n,
              "batch_size": args.batch_size, "rows": rows,
              "early_stop_note": "a batch stops once all its captions have produced eos: with the article's "
                                 "~25-40-token captions that is about half of the right-text positions"}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
