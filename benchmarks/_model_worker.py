"""One measurement of bench_model.py in a fresh process; prints one JSON line. Runs under either environment:
`--impl ours|gemm` in the project's, `--impl reference` in the reference env (only `rudolph_ft.config` is
imported there, for the preset's numbers)."""

import argparse
import json
import statistics

import torch
from _common import time_steps

from rudolph_ft.config import RuDolphConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_WEIGHTS = (0.01, 1.0, 7.0)


def make_inputs(config: RuDolphConfig, batch: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    left = torch.zeros(batch, config.l_text_seq_length, dtype=torch.long)
    image = torch.randint(0, config.image_vocab_size, (batch, config.image_seq_length), generator=generator)
    right = torch.randint(4, config.vocab_size, (batch, config.r_text_seq_length), generator=generator)
    right[:, 0], right[:, 40:] = 2, 0  # bos, a caption, pads
    right[:, 39] = 3
    return torch.cat([left, image, right], dim=1).to(device)


def ours_step(config, batch, device):
    from rudolph_ft.model import RuDolph

    model = RuDolph(config).to(device).train()
    input_ids = make_inputs(config, batch, device)

    def step():
        model(input_ids, loss_weights=LOSS_WEIGHTS).loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def reference_step(config, batch, device):
    from rudolph.model import ruDolphModel
    from rudolph.model.utils import get_attention_mask

    fields = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "embedding_dropout_prob",
              "attention_dropout_prob", "output_dropout_prob", "l_text_seq_length", "r_text_seq_length",
              "kernel_size", "last_kernel_size", "image_tokens_per_dim", "image_vocab_size", "text_special_tokens",
              "image_special_tokens", "cogview_sandwich_layernorm", "cogview_pb_relax")
    model = ruDolphModel(device=device, **{f: getattr(config, f) for f in fields}).to(device).train()
    input_ids = make_inputs(config, batch, device)
    mask = get_attention_mask(batch, config.l_text_seq_length, config.image_tokens_per_dim,
                              config.r_text_seq_length, device)

    def step():
        loss, _ = model(input_ids, mask, return_loss=True, lt_loss_weight=LOSS_WEIGHTS[0],
                        img_loss_weight=LOSS_WEIGHTS[1], rt_loss_weight=LOSS_WEIGHTS[2])
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def gemm_step(config, batch, device, dtype):
    """Only the matrix products of a forward+backward step, at the reference's shapes."""
    tokens, hidden = batch * config.total_seq_length, config.hidden_size
    heads, seq = config.num_attention_heads, config.total_seq_length
    head_dim = hidden // heads

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)
    # (activation, weight) operand pairs of one layer, then the output layer
    layer = [(rand(tokens, hidden), rand(hidden, 3 * hidden)),
             (rand(batch * heads, seq, head_dim), rand(batch * heads, head_dim, seq)),  # q @ k^T
             (rand(batch * heads, seq, seq), rand(batch * heads, seq, head_dim)),  # p @ v
             (rand(tokens, hidden), rand(hidden, hidden)),
             (rand(tokens, hidden), rand(hidden, 4 * hidden)),
             (rand(tokens, 4 * hidden), rand(4 * hidden, hidden))]
    head = (rand(tokens, hidden), rand(hidden, config.total_vocab_size))
    layer_grads = [torch.matmul(a, b) for a, b in layer]  # stand-ins for the output gradients
    head_grad = torch.matmul(*head)

    def products(a, b, grad):
        torch.matmul(a, b)  # forward
        torch.matmul(grad, b.transpose(-1, -2))  # gradient of the first operand
        torch.matmul(a.transpose(-1, -2), grad)  # gradient of the second operand (the weight)

    def step():
        for _ in range(config.num_layers):
            for (a, b), grad in zip(layer, layer_grads, strict=True):
                products(a, b, grad)
        products(*head, head_grad)
    return step


def interleaved(config, batch, device, dtype, rounds: int) -> dict:
    """Ours, the reference and the GEMM floor in one process, one step each per round (after one warm-up
    round), so that a machine slowing down or speeding up affects all three alike. Needs the reference env."""
    steps = {"ours": ours_step(config, batch, device), "reference": reference_step(config, batch, device),
             "gemm": gemm_step(config, batch, device, dtype)}
    times = {name: [] for name in steps}
    for round_index in range(rounds + 1):
        for name, step in steps.items():
            measured = time_steps(_autocast(step, device, dtype) if name != "gemm" else step, warmup=0, steps=1,
                                  device=device)
            if round_index:
                times[name].append(measured["step_s"])
    return {name: {"step_s": statistics.median(values), "times": values} for name, values in times.items()}


def _autocast(step, device, dtype):
    if dtype == torch.float32:
        return step

    def wrapped():
        with torch.autocast(device.type, dtype=dtype):
            step()
    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["ours", "reference", "gemm", "interleaved"], required=True)
    parser.add_argument("--preset", default="350M")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = RuDolphConfig.from_preset(args.preset)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.impl == "interleaved":
        print(json.dumps(interleaved(config, args.batch, device, dtype, args.steps)))
        return
    if args.impl == "gemm":
        step = gemm_step(config, args.batch, device, dtype)
    else:
        step = _autocast((ours_step if args.impl == "ours" else reference_step)(config, args.batch, device),
                         device, dtype)
    print(json.dumps(time_steps(step, warmup=args.warmup, steps=args.steps, device=device)))


if __name__ == "__main__":
    main()
