"""The benchmarks' floors count the FLOPs the pipelines really run: `bench_generate.rerank_floor` against torch's own
FLOP counter over `rerank_by_image` on a small model (an independent count of every matmul the forward runs)."""

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rudolph_ft.components import Components
from rudolph_ft.model import RuDolph, load_model
from rudolph_ft.model.vqgan import load_vqgan
from rudolph_ft.pipelines import image_codes, rerank_by_image
from rudolph_ft.tokenizer import train_tokenizer

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from bench_generate import rerank_floor  # noqa: E402


def test_rerank_floor_counts_the_flops_rerank_runs():
    captions = ["блюдо: борщ; ккал: 70;", "блюдо: плов; ккал: 250;", "блюдо: шаурма;"]
    model = load_model("demo", pretrained=False, l_text_seq_length=16)
    assert isinstance(model, RuDolph)
    components = Components(model.eval(), train_tokenizer(captions * 4, 50), load_vqgan("tiny", seed=0))
    codes = image_codes(components, [torch.rand(3, 64, 64)])[0]
    with FlopCounterMode(display=False) as counter:
        ranked = rerank_by_image(components, captions, codes)
    assert len(ranked) == 3
    counted = counter.get_total_flops()
    estimated = rerank_floor(model.config, {"prefill_gflops": 1.0}, len(captions))["gflop"] * 1e9
    # the estimate adds biases and layer norms (13 h per layer and token), the counter only matmuls; attention is
    # counted by the counter as it runs (blocks), by the estimate as the causal half: a few per cent at this size
    print(f"estimated {estimated / 1e6:.1f} MFLOP, counted {counted / 1e6:.1f}")
    assert abs(estimated - counted) / counted < 0.05, (estimated, counted)
