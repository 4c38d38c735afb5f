"""Tiny model bundles for the pipeline, CLI and web-demo tests (imported by path: tests/assets is no package).

`tiny_components()` is the "demo" preset's layout (8 | 8x8 | 48) at width 64 with seeded random weights, a tokenizer
trained on article-style captions (the model's text vocabulary sized to it) and the tiny random VQGAN (64 px images
-> 8x8 codes). `scripted=CAPTION` turns every transformer layer into the
identity and writes the output layer so that right-text position j predicts token j + 1 of CAPTION: the model then
"captions" every photo with CAPTION, which makes nutrition parsing, early stopping and the web demo checkable.
"""

import warnings

import pytest
import torch

from rudolph_ft.components import Components, save_components
from rudolph_ft.config import RuDolphConfig
from rudolph_ft.model import RuDolph
from rudolph_ft.model.vqgan import load_vqgan
from rudolph_ft.tokenizer import train_tokenizer

DISHES = ("борщ", "плов", "шаурма", "паста", "салат оливье", "суп")
CAPTIONS = [f"блюдо: {dish}; белков: {p}; жиров: {f}; углеводов: {c}; ккал: {k};"
            for dish in DISHES for p, f, c, k in (("3,5", 4, 6, 70), (12, "9.5", 30, 250))]
SCRIPT = "блюдо: борщ; белков: 3,5; жиров: 4; углеводов: 6; ккал: 70;"


@pytest.fixture(autouse=True)
def one_thread():
    """Use as `one_thread = bundle.one_thread` in a test module: tiny models gain nothing from more threads, and on a
    busy machine OpenMP threads waiting for each other make them 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_components(seed: int = 0, scripted: str | None = None) -> Components:
    """A narrow demo-layout model (random weights drawn from `seed`), caption tokenizer and tiny VQGAN."""
    with warnings.catch_warnings():  # the captions allow fewer merges than asked for: fine
        warnings.simplefilter("ignore")
        tokenizer = train_tokenizer(CAPTIONS, 300)
    demo = RuDolphConfig.from_preset("demo")
    config = demo.replace(hidden_size=64, num_attention_heads=4, name="tiny-test",
                          vocab_size=tokenizer.vocab_size + demo.l_text_seq_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RuDolph(config).eval()
    components = Components(model, tokenizer, load_vqgan("tiny"))
    if scripted is not None:
        script_caption(components, scripted)
    return components


@torch.no_grad()
def script_caption(components: Components, caption: str) -> None:
    """Make the model write `caption` after any image (see the module doc)."""
    model, config = components.model, components.model.config
    ids = components.tokenizer.encode_text(caption.lower(), config.r_text_seq_length)
    for name, tensor in model.transformer.layers.named_parameters():
        if name.endswith(("dense.weight", "dense.bias", "dense_4h_to_h.weight", "dense_4h_to_h.bias")):
            tensor.zero_()  # attention and MLP add nothing: each position keeps its own embedding
    # right-text position j: a large one-hot along hidden dimension j (after the layer norms, about 16 e_j)
    model.r_text_pos_embeddings.weight.zero_()
    model.r_text_pos_embeddings.weight[: config.r_text_seq_length].fill_diagonal_(100.0)
    head = model.to_logits[1]
    for position in range(config.r_text_seq_length - 1):
        head.weight[int(ids[position + 1]), position] += 1.0  # a margin of ~16 in the logits


def save_tiny_bundle(directory, seed: int = 0, scripted: str | None = None):
    """Write `tiny_components(seed, scripted)` as a model directory; returns its path."""
    return save_components(tiny_components(seed, scripted), directory)
