"""Captioning, reranking and zero-shot speed: rudolph-ft pipelines vs the article's `rudolph.pipelines` (rc4).

Same config (the 350M layout the article used, `350M_v1`, random weights, fp32), same image, template, sampling
settings and batch sizes; each measurement in a fresh process (this file re-runs itself as the worker):

    python benchmarks/bench_generate.py                          # CPU: captions n=16, rerank 4, zero-shot 8
    python benchmarks/bench_generate.py --json                   # one JSON object with the ratios
    python benchmarks/bench_generate.py --device cuda --no-reference

The reference runs in the rc4 reference env (`scripts/make-reference-env.sh .venv-ref-rc4 0.0.1rc4 0.5.0rc1`):
`--ref-python` or RUDOLPH_REF_PYTHON_RC4. Both sides use the VQGAN architecture with random weights and the
youtokentome model `tests/assets/tokenizer/yttm-ru-5000/bpe.model` (the official one needs a download).

Floor: the captions worker also measures this machine, now (memory bandwidth: `sum` of 1 GiB; GEMM rates at the
decoding step's and the prefill's shapes) and prints 16 captions' floor: the prefill's FLOPs, then per step the
weights streamed once plus the step's FLOPs (`caption_floor`); `x_floor` = ours / floor (the issue's target: <= 1.5).
`predict` times `rudolph-ft predict PHOTO` end to end, as a user types it, on the random 350M saved to a folder.
Thread count matters on a shared machine: with other jobs on the cores, 2 threads can be far slower than 1 (every
parallel region waits for a descheduled thread), so the table prints the load average.

Fairness: random weights rarely end a caption, and the reference always decodes every remaining right-text token,
so ours is timed with `stop_at_eos=False` (exactly the reference's number of tokens); "per token" rates divide by
generated tokens (captions x positions). Ours with early stopping (the default) is timed too: on random weights it
saves nothing; on a fine-tuned model a batch stops after its longest caption (see `early_stop_note` in the output).
"""

from __future__ import annotations

import argparse
import json
import math
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
TASKS = ("captions", "rerank", "zero_shot", "predict")


# ---- the machine's floor --------------------------------------------------------------------------------------------
def _best_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_rates(hidden: int, rows: int, prompt: int) -> dict:
    """This machine's memory bandwidth and GEMM rates, measured now (under whatever load there is).

    bandwidth: `sum` of a 1 GiB fp32 tensor (larger than any cache), bytes read per second. GEMM rates: a
    (rows x hidden) @ (hidden x 4 hidden) product (the decoding step's shape) and a (prompt x hidden) one (the
    prefill's), on a weight that stays in cache, so they measure arithmetic, not memory.
    """
    import torch

    big = torch.ones(2**28)
    bandwidth = big.numel() * 4 / _best_seconds(big.sum, 3)
    del big
    weight = torch.randn(4 * hidden, hidden)
    rates = {}
    for name, m in (("decode", rows), ("prefill", prompt)):
        x = torch.randn(m, hidden)
        flops = 2 * m * weight.numel()
        repeats = max(3, int(2e9 // flops))
        # the faster orientation of each shape (the model picks it the same way: `few_rows_linear`)
        seconds = min(_best_seconds(lambda x=x, n=repeats: [torch.mm(weight, x.t()) for _ in range(n)], 3),
                      _best_seconds(lambda x=x, n=repeats: [torch.mm(x, weight.t()) for _ in range(n)], 3))
        rates[f"{name}_gflops"] = flops * repeats / seconds / 1e9
    return {"bandwidth_gbs": bandwidth / 1e9, **rates}


def _layer_params(config) -> int:
    """Parameters of all transformer layers: qkv, dense, 2 MLP matrices, biases, norms."""
    hidden = config.hidden_size
    return config.num_layers * (12 * hidden * hidden + 13 * hidden)


def caption_floor(config, rates: dict, rows: int, prompt: int, steps: int) -> dict:
    """Seconds 16 captions cannot beat on this machine: the prefill's FLOPs at the prefill GEMM rate, then per decoding
    step the weights streamed once at the measured bandwidth plus the step's FLOPs at the decode GEMM rate (`sum`;
    `roofline` takes the larger of the two instead, i.e. perfect overlap of memory and arithmetic)."""
    hidden, layers = config.hidden_size, config.num_layers
    layer_params = _layer_params(config)
    head_params = config.text_vocab_size * (hidden + 1)  # the text rows of the output layer (decoding samples text)
    step_bytes = 4 * (layer_params + head_params)
    context = prompt + steps / 2  # mean keys attended per decoding step
    step_flops = 2 * rows * (layer_params + head_params) + 4 * rows * layers * hidden * context
    prefill_flops = 2 * prompt * layer_params + 2 * layers * hidden * prompt * prompt  # causal attention: half
    memory_s, math_s = step_bytes / rates["bandwidth_gbs"] / 1e9, step_flops / rates["decode_gflops"] / 1e9
    prefill_s = prefill_flops / rates["prefill_gflops"] / 1e9
    return {**rates, "step_gb": step_bytes / 1e9, "step_gflop": step_flops / 1e9, "prefill_gflop": prefill_flops / 1e9,
            "step_floor_s": memory_s + math_s, "prefill_floor_s": prefill_s, "steps": steps,
            "seconds": prefill_s + steps * (memory_s + math_s),
            "roofline_seconds": prefill_s + steps * max(memory_s, math_s)}


def rerank_floor(config, rates: dict, captions: int) -> dict:
    """Seconds `rerank_by_image` of `captions` cannot beat: the FLOPs of the positions its scores read (each caption's
    left text and the image after it: no prefix is shared, the caption comes first) at the GEMM rate of that shape;
    the text head on the left text (its perplexity), the image head on the image."""
    hidden, layers = config.hidden_size, config.num_layers
    layer_params = _layer_params(config)
    positions = config.l_text_seq_length + config.image_seq_length
    heads = config.l_text_seq_length * config.text_vocab_size + config.image_seq_length * config.image_vocab_size
    flops = captions * (2 * positions * layer_params + 2 * layers * hidden * positions * positions
                        + 2 * hidden * heads)
    return {**rates, "gflop": flops / 1e9, "seconds": flops / rates["prefill_gflops"] / 1e9}


# ---- workers (one measurement per process) ------------------------------------------------------------------------
def _timed(run, repeats: int) -> dict:
    """Median wall seconds of `run()`, and its CPU seconds (all threads): on a machine other jobs share, CPU
    seconds of a 1-thread run are far steadier than wall seconds."""
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        info = run() or {}
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"seconds": statistics.median(times), "times": times, "cpu_seconds": statistics.median(cpu_times), **info}


def ours_worker(args) -> dict:
    import torch

    from rudolph_ft.components import Components
    from rudolph_ft.config import VQGAN_PRESETS, RuDolphConfig
    from rudolph_ft.data.images import load_image
    from rudolph_ft.model import RuDolph
    from rudolph_ft.model.vqgan import VQGAN
    from rudolph_ft.pipelines import generate_captions_batch, image_codes, rerank_by_image, zero_shot_classify
    from rudolph_ft.tokenizer import Tokenizer

    device = torch.device(args.device)
    model = RuDolph(RuDolphConfig.from_preset(args.preset)).to(device).eval()
    components = Components(model, Tokenizer.from_file(TOKENIZER), VQGAN(VQGAN_PRESETS[args.vqgan]).to(device))
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
        start = time.perf_counter()
        image_codes(components, [image])
        result["vqgan_seconds"] = time.perf_counter() - start
        cfg = model.config  # the prompt: left text, image, bos + template
        prompt = cfg.l_text_seq_length + cfg.image_seq_length + cfg.r_text_seq_length - result["positions"]
        rates = machine_rates(cfg.hidden_size, args.batch_size, prompt)
        result["floor"] = caption_floor(cfg, rates, min(args.n, args.batch_size), prompt,
                                        result["positions"] - 1)  # the first token comes from the prefill
        result["floor"]["seconds"] *= math.ceil(args.n / args.batch_size)  # batches decode one after another
        result["floor"]["roofline_seconds"] *= math.ceil(args.n / args.batch_size)
        return result
    if args.task == "predict":
        return predict_end_to_end(components, args)
    if args.task == "rerank":
        result = _timed(lambda: {"captions": len(rerank_by_image(components, CAPTIONS, image))}, args.repeats)
        cfg = model.config  # the captions run batched: (captions x positions) rows through every linear
        rows = len(CAPTIONS) * (cfg.l_text_seq_length + cfg.image_seq_length)
        result["floor"] = rerank_floor(cfg, machine_rates(cfg.hidden_size, args.batch_size, rows), len(CAPTIONS))
        return result
    return _timed(lambda: {"classes": len(zero_shot_classify(components, image, CLASSES, "{}").classes)},
                  args.repeats)


def predict_end_to_end(components, args) -> dict:
    """`rudolph-ft predict PHOTO` as a user types it, on these components saved as a model directory: process start,
    loading, VQGAN, n captions, rerank, parsing. Timed from outside; the command's own threads as the worker's."""
    import resource
    import subprocess
    import tempfile

    from rudolph_ft.components import save_components

    with tempfile.TemporaryDirectory() as directory:
        save_components(components, directory)
        command = [sys.executable, "-m", "rudolph_ft", "predict", str(PHOTO), "--model", directory, "--device",
                   args.device, "--offline", "-n", str(args.n), "--batch-size", str(args.batch_size), "--json"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

        def run():  # the command's CPU seconds are its own, not this process's
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(command, check=True, capture_output=True, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return {"cpu_seconds": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}

        return {**_timed(run, args.repeats), "command": f"rudolph-ft predict PHOTO -n {args.n} (random weights)"}


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
        model(torch.zeros(1, total, dtype=torch.long, device=args.device),
              torch.tril(torch.ones(1, 1, total, total, device=args.device)))

    if args.task == "predict":
        return {"error": "the reference has no predict command"}
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
            str(args.batch_size), "--vqgan", args.vqgan, "--device", args.device, "--threads", str(args.threads),
            "--repeats", str(repeats)]
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
        floor = ours.get("floor")
        if floor and "seconds" in ours:
            row["floor_tokens_per_s"] = ours["tokens"] / floor["seconds"]
            row["x_floor"] = ours["seconds"] / floor["seconds"]  # target: <= 1.5
            row["x_roofline"] = ours["seconds"] / floor["roofline_seconds"]
    if task == "rerank" and ours.get("floor") and "seconds" in ours:
        row["x_floor"] = ours["seconds"] / ours["floor"]["seconds"]
        if "seconds" in ref:  # the most any implementation of the same score could gain over the reference here
            row["speedup_at_floor"] = ref["seconds"] / ours["floor"]["seconds"]
    return row


def print_table(result: dict) -> None:
    print(f"RuDOLPH {result['preset']} pipelines, {result['device']}, {result['threads']} threads, random weights; "
          f"captions n={result['n']} batch {result['batch_size']}; load average after the run "
          f"{result['load_average'][0]:.2f} on {result['cpus']} CPUs")
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
                 "zero_shot": "zero_shot_classify (8 cl.)", "predict": "rudolph-ft predict (CLI)"}[row["task"]]
        print(f"{label:<28} | {cell(ours.get('seconds'), '8.2f')} {cell(ref.get('seconds'), '8.2f')} | "
              f"{cell(row.get('speedup'), '7.1f')}x | {rates[0]:>16} {rates[1]:>16}   CPU s: "
              f"{cell(ours.get('cpu_seconds'), '6.2f')} / {cell(ref.get('cpu_seconds'), '6.2f')}")
        if row["task"] == "captions":
            early = ours.get("early_stop", {})
            print(f"{'  ours, early stop (default)':<28} | {cell(early.get('seconds'), '8.2f')} {'':>8} | {'':>8} | "
                  f"{cell(row.get('ours_early_stop_captions_per_s'), '8.3f')} capt/s  (stopped after "
                  f"{early.get('steps', '-')} of {early.get('positions', '-')} positions)")
            print(f"{'  per generated token':<28} | {'':>8} {'':>8} | {'':>8} | "
                  f"{cell(row.get('ours_tokens_per_s'), '8.1f')} tok/s  "
                  f"{cell(row.get('reference_tokens_per_s'), '8.1f')} tok/s")
            floor = ours.get("floor")
            if floor:
                print(f"{'  floor (this machine, now)':<28} | {floor['seconds']:8.2f} {'':>8} | "
                      f"{cell(row.get('x_floor'), '6.2f')}x  | {cell(row.get('floor_tokens_per_s'), '8.1f')} tok/s"
                      f"   ours = {cell(row.get('x_floor'), '4.2f')}x floor, {cell(row.get('x_roofline'), '4.2f')}x "
                      f"roofline ({floor['roofline_seconds']:.2f} s)")
                print(f"{'':<28}   {floor['bandwidth_gbs']:.1f} GB/s, GEMM {floor['decode_gflops']:.0f} GFLOP/s "
                      f"(decode shape), {floor['prefill_gflops']:.0f} (prefill); step {floor['step_gb']:.2f} GB + "
                      f"{floor['step_gflop']:.1f} GFLOP = {floor['step_floor_s']:.3f} s x {floor['steps']}, prefill "
                      f"{floor['prefill_gflop']:.0f} GFLOP = {floor['prefill_floor_s']:.2f} s; VQGAN "
                      f"{ours.get('vqgan_seconds', 0):.2f} s (not in the floor)")
        if row["task"] == "rerank" and ours.get("floor"):
            floor = ours["floor"]
            print(f"{'  floor (this machine, now)':<28} | {floor['seconds']:8.2f} {'':>8} | "
                  f"{cell(row.get('x_floor'), '6.2f')}x  | {floor['gflop']:.0f} GFLOP at {floor['prefill_gflops']:.0f} "
                  f"GFLOP/s; the reference / floor: {cell(row.get('speedup_at_floor'), '4.1f')}x (no shared prefix: "
                  "each caption precedes the image)")
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
    parser.add_argument("--vqgan", default="sber-gumbel-f8", help="ours' VQGAN preset (tiny: gpu_suite's dry run)")
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
        skip = args.no_reference or task == "predict"  # the reference has no predict command
        ref = {"error": "skipped"} if skip else measure(args.ref_python, "reference", task, args, args.ref_repeats)
        rows.append(summarise(task, ours, ref))
    result = {"preset": args.preset, "device": args.device, "threads": args.threads, "n": args.n,
              "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              "batch_size": args.batch_size, "rows": rows,
              "early_stop_note": "a batch stops once all its captions have produced eos: with the article's "
                                 "~25-40-token captions that is about half of the right-text positions"}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
