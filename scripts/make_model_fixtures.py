"""Run the ORIGINAL `rudolph` model on deterministic weights and inputs; save what it computes as test fixtures.

Runs inside the reference env only (`scripts/make-reference-env.sh`), never imports rudolph_ft:

    .venv-ref/bin/python scripts/make_model_fixtures.py --out tests/assets/model_parity
    .venv-ref-rc4/bin/python scripts/make_model_fixtures.py --out tests/assets/model_parity

Each case stores the reference's state-dict key shapes and mask buffers (bit-packed), the inputs, the attention
mask it was run with (bit-packed), its eval-mode logits and its losses for two sets of loss weights.
`tests/test_model_parity.py` rebuilds the same weights (`tests/parity_weights.py`) in rudolph_ft and compares.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import rudolph
import torch
from rudolph.model import ruDolphModel
from rudolph.model import utils as ref_utils

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("parity_weights", HERE.parent / "tests" / "parity_weights.py")
parity_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity_weights)

BASE = dict(embedding_dropout_prob=0.1, attention_dropout_prob=0.1, output_dropout_prob=0.1,
            cogview_sandwich_layernorm=True, cogview_pb_relax=True, image_vocab_size=128)
# name: (versions, params, right-text lengths of the batch rows)
CASES = {
    # the real 350M layout (64 / 16x16 / 64) with v2-style special tokens, six layers: every mask kind occurs
    "v2_layout": (("rc10",), dict(num_layers=6, hidden_size=32, num_attention_heads=4, l_text_seq_length=64,
                                  image_tokens_per_dim=16, r_text_seq_length=64, kernel_size=7, last_kernel_size=9,
                                  vocab_size=64 + 64, text_special_tokens=16, image_special_tokens=8), (64, 20)),
    # the same layout without special tokens (350M v1; the only kind rc4 can build)
    "v1_layout": (("rc10", "rc4"), dict(num_layers=6, hidden_size=32, num_attention_heads=4, l_text_seq_length=64,
                                        image_tokens_per_dim=16, r_text_seq_length=64, kernel_size=7,
                                        last_kernel_size=9, vocab_size=64 + 64), (64, 11)),
    # 2.7B-like: left text longer than right text, 8 layers
    "2.7B_like": (("rc10", "rc4"), dict(num_layers=8, hidden_size=32, num_attention_heads=4, l_text_seq_length=24,
                                        image_tokens_per_dim=8, r_text_seq_length=10, kernel_size=7,
                                        last_kernel_size=9, vocab_size=128 + 24, image_vocab_size=64), (10, 4)),
    # small layout, odd layer count, no sandwich norms and no PB-relax
    "plain_small": (("rc10", "rc4"), dict(num_layers=7, hidden_size=24, num_attention_heads=2, l_text_seq_length=8,
                                          image_tokens_per_dim=4, r_text_seq_length=6, kernel_size=3,
                                          last_kernel_size=5, vocab_size=100 + 8, image_vocab_size=64,
                                          cogview_sandwich_layernorm=False, cogview_pb_relax=False), (6, 3, 2)),
}
LOSS_WEIGHTS = ((0.01, 1.0, 7.0), (1.0, 0.0, 1.0))


def pack(mask: torch.Tensor) -> dict:
    bits = np.packbits(mask.detach().cpu().numpy().astype(bool).reshape(-1))
    return {"shape": list(mask.shape), "bits": torch.from_numpy(bits)}


def run_case(name: str, version: str, params: dict, r_lengths, seed: int) -> dict:
    params = {**BASE, **params}
    model = ruDolphModel(device="cpu", **params).eval()
    state = model.state_dict()
    model.load_state_dict({**state, **parity_weights.fill_state_dict(state, seed)})
    l_len, per_dim, r_len = params["l_text_seq_length"], params["image_tokens_per_dim"], params["r_text_seq_length"]
    text_vocab = params["vocab_size"] + params.get("text_special_tokens", 0)
    input_ids, r_mask = parity_weights.make_inputs(
        l_len, per_dim, r_len, text_vocab, params["image_vocab_size"], r_lengths, seed + 1)
    batch = input_ids.shape[0]
    if version == "rc4":  # rc4 zeroes every row from the first right-text pad on
        attention_mask = ref_utils.get_attention_mask(r_mask, batch, l_len, per_dim, r_len, "cpu")
    else:
        attention_mask = ref_utils.get_attention_mask(batch, l_len, per_dim, r_len, "cpu")
    with torch.no_grad():
        logits = model(input_ids, attention_mask, return_loss=False)[0]
        losses = []
        for w_l, w_i, w_r in LOSS_WEIGHTS:
            loss, values = model(input_ids, attention_mask, return_loss=True,
                                 lt_loss_weight=w_l, img_loss_weight=w_i, rt_loss_weight=w_r)
            losses.append({"weights": [w_l, w_i, w_r], "loss": float(loss),
                           **{k: float(v) for k, v in values.items()}})
        partial = None
        if version == "rc10":  # left text + image only: the reference scores two segments
            prefix = input_ids[:, : l_len + per_dim * per_dim]
            loss, values = model(prefix, attention_mask, return_loss=True,
                                 lt_loss_weight=0.01, img_loss_weight=1, rt_loss_weight=7)
            partial = {"loss": float(loss), **{k: float(v) for k, v in values.items()}}
    masks = {k: pack(v) for k, v in model.state_dict().items() if k.endswith("_mask")}
    return {
        "case": name, "version": version, "rudolph": rudolph.__version__, "seed": seed, "params": params,
        "state_shapes": {k: list(v.shape) for k, v in state.items()}, "masks": masks,
        "input_ids": input_ids, "attention_mask": pack(attention_mask), "logits": logits.float(),
        "losses": losses, "partial_loss": partial,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=20211223)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    version = "rc4" if rudolph.__version__.endswith("rc4") else "rc10"
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    for name in args.cases.split(","):
        versions, params, r_lengths = CASES[name]
        if version not in versions:
            continue
        fixture = run_case(name, version, params, r_lengths, args.seed)
        path = args.out / f"{name}-{version}.pt"
        torch.save(fixture, path)
        print(f"{path}: logits {tuple(fixture['logits'].shape)}, loss {fixture['losses'][0]['loss']:.6f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
