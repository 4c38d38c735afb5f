"""One measurement of bench_train.py in a fresh process; prints one JSON line.

`--impl article`: the reference `ruDolphModel` driven the article's way (rudalle VQGAN encode of every batch,
the article's substring freeze, bitsandbytes Adam8bit over model.parameters(), OneCycleLR, clip 1.0) - run in the
reference env. `--impl ours`: rudolph-ft's step on cached image codes, the same freeze (`mode="article"`), the same
optimizer and schedule.

Each step also records where its time goes (`phase_steps`: image codes, forward, backward, optimizer = clip + step +
schedule + zero_grad); `--device cuda --dtype bf16` runs both sides on a GPU under bf16 autocast.
"""

import argparse
import json
import os
import time

import torch
from _common import time_steps

from rudolph_ft.config import RuDolphConfig

LOSS_WEIGHTS = (0.01, 1.0, 7.0)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Phases:
    """Wall time of the named parts of each step (synchronising the GPU at every mark)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.steps, self._last = device, [], 0.0

    def start(self) -> None:
        self.steps.append({})
        self._last = self._now()

    def mark(self, name: str) -> None:
        now = self._now()
        self.steps[-1][name] = now - self._last
        self._last = now

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def captions(config: RuDolphConfig, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    right = torch.randint(4, config.vocab_size, (batch, config.r_text_seq_length), generator=generator)
    right[:, 0], right[:, 39], right[:, 40:] = 2, 3, 0
    return right


def article_step(config: RuDolphConfig, batch: int, optimizer_name: str, device: torch.device, dtype: torch.dtype,
                 phases: Phases):
    import bitsandbytes as bnb
    from rudalle import get_vae
    from rudolph.model import ruDolphModel
    from rudolph.model.utils import get_attention_mask

    fields = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "embedding_dropout_prob",
              "attention_dropout_prob", "output_dropout_prob", "l_text_seq_length", "r_text_seq_length",
              "kernel_size", "last_kernel_size", "image_tokens_per_dim", "image_vocab_size", "text_special_tokens",
              "image_special_tokens", "cogview_sandwich_layernorm", "cogview_pb_relax")
    model = ruDolphModel(device=device.type, **{f: getattr(config, f) for f in fields}).to(device).train()
    vae = get_vae(pretrained=False).to(device)
    for name, param in model.named_parameters():  # the article's freeze rule, verbatim in effect
        lowered = name.lower()
        keep = "ln" in lowered or "norm" in lowered or "embeddings" in lowered
        param.requires_grad = keep or not ("mlp" in lowered or "attn" in lowered)
    optimizer = bnb.optim.Adam8bit(model.parameters(), lr=2e-5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-5, final_div_factor=500, total_steps=100)
    images = torch.rand(batch, 3, config.image_size, config.image_size,
                        generator=torch.Generator().manual_seed(0)).to(device)
    left = torch.zeros(batch, config.l_text_seq_length, dtype=torch.long, device=device)
    right = captions(config, batch).to(device)
    mask = get_attention_mask(batch, config.l_text_seq_length, config.image_tokens_per_dim,
                              config.r_text_seq_length, device.type)

    def step():
        phases.start()
        with torch.no_grad(), autocast(device, dtype):
            codes = vae.get_codebook_indices(images)
        phases.mark("image_codes")
        input_ids = torch.cat([left, codes, right], dim=1)
        with autocast(device, dtype):
            loss, _ = model(input_ids, mask, return_loss=True, lt_loss_weight=LOSS_WEIGHTS[0],
                            img_loss_weight=LOSS_WEIGHTS[1], rt_loss_weight=LOSS_WEIGHTS[2])
        phases.mark("forward")
        loss.backward()
        phases.mark("backward")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        phases.mark("optimizer")
    return step


def ours_step(config: RuDolphConfig, batch: int, optimizer_name: str, device: torch.device, dtype: torch.dtype,
              phases: Phases):
    from rudolph_ft.model import RuDolph
    from rudolph_ft.train.config import OptimSection, ScheduleSection
    from rudolph_ft.train.freeze import FreezeConfig, apply_freeze
    from rudolph_ft.train.optim import build_optimizer, build_scheduler

    model = RuDolph(config).to(device).train()
    roles = apply_freeze(model, FreezeConfig(mode="article"))
    optimizer = build_optimizer(model, roles, OptimSection(name=optimizer_name, lr=2e-5))
    scheduler = build_scheduler(optimizer, ScheduleSection(), 100)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, config.image_vocab_size, (batch, config.image_seq_length), generator=generator)
    input_ids = torch.cat([torch.zeros(batch, config.l_text_seq_length, dtype=torch.long), codes,
                           captions(config, batch)], dim=1).to(device)  # codes come from the cache: no VQGAN per step
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step():
        phases.start()
        phases.mark("image_codes")
        with autocast(device, dtype):
            loss = model(input_ids, loss_weights=LOSS_WEIGHTS).loss
        phases.mark("forward")
        loss.backward()
        phases.mark("backward")
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        phases.mark("optimizer")
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=["article", "ours"], required=True)
    parser.add_argument("--preset", default="350M")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--optimizer", default="adam8bit")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    config = RuDolphConfig.from_preset(args.preset)
    device = torch.device(args.device)
    phases = Phases(device)
    make = article_step if args.impl == "article" else ours_step
    step = make(config, args.batch, args.optimizer, device, DTYPES[args.dtype], phases)
    result = time_steps(step, warmup=args.warmup, steps=args.steps, device=device)
    print(json.dumps({**result, "phase_steps": phases.steps[args.warmup:]}))  # bench_train takes the medians


if __name__ == "__main__":
    main()
