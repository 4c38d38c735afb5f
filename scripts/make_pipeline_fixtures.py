"""Run the ORIGINAL `rudolph` pipelines on deterministic weights; save their scores and greedy tokens as fixtures.

Runs inside the reference env only (`scripts/make-reference-env.sh`), never imports rudolph_ft:

    .venv-ref-rc4/bin/python scripts/make_pipeline_fixtures.py --out tests/assets/pipelines   # rudolph.pipelines
    .venv-ref/bin/python scripts/make_pipeline_fixtures.py --out tests/assets/pipelines       # rudolph.api (rc10)

The model gets the shared deterministic weights (`tests/parity_weights.py`), the text tokenizer is the youtokentome
model `tests/assets/tokenizer/yttm-captions/bpe.model`, and the VQGAN is replaced by a stub that returns fixed image
codes (so no image tokenizer has to match). Each case stores its inputs and:

- rerank by image and by text: the reference's text and image perplexities (and rc10's combined scores);
- zero-shot: the class perplexities (recorded from `ce_to_ppl`) and `zs_clf`'s scores;
- greedy (top_k=1) captions and image codes: the generated token ids.

`tests/test_pipelines_parity.py` rebuilds the same model in rudolph_ft and compares.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import rudolph
import torch
import youtokentome as yttm
from PIL import Image
from rudalle.tokenizer import YTTMTokenizerWrapper
from rudolph.model import ruDolphModel

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE.parent / "tests" / "assets" / "tokenizer" / "yttm-captions" / "bpe.model"
_spec = importlib.util.spec_from_file_location("parity_weights", HERE.parent / "tests" / "parity_weights.py")
parity_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity_weights)

BASE = dict(embedding_dropout_prob=0.1, attention_dropout_prob=0.1, output_dropout_prob=0.1,
            cogview_sandwich_layernorm=True, cogview_pb_relax=True, num_layers=6, hidden_size=32,
            num_attention_heads=4, kernel_size=3, last_kernel_size=5, image_vocab_size=64, image_tokens_per_dim=4)
# name: (version, params). rc4's rerank-by-image and codebook generation need l_text == r_text length.
CASES = {
    "equal_texts-rc4": ("rc4", dict(l_text_seq_length=12, r_text_seq_length=12, vocab_size=600 + 12)),
    "equal_texts-rc10": ("rc10", dict(l_text_seq_length=12, r_text_seq_length=12, vocab_size=600 + 12,
                                      text_special_tokens=16, image_special_tokens=8)),
    "long_left-rc10": ("rc10", dict(l_text_seq_length=16, r_text_seq_length=10, vocab_size=600 + 16,
                                    text_special_tokens=8, image_special_tokens=4)),
}
CAPTIONS = ["блюдо: борщ; белков: 3; жиров: 4; углеводов: 6; ккал: 70;", "блюдо: плов", "салат с тунцом",
            "паста карбонара, ккал: 300"]
TEXT = "борщ со сметаной"
# six classes in batches of 3: rc10's zs_clf reuses its cache across batches and fails on a smaller last batch
CLASSES = ["борщ", "плов", "шаурма", "салат оливье", "паста", "суп"]
ZS_TEMPLATE = "блюдо: {}"
SPECIAL_TOKENS = ("<LT_UNK>", "<RT_UNK>", "<LT_T2I>", "<LT_I2T>", "<LT_T2T>", "<RT_I2T>")


class CodesVAE:
    """Stands in for the VQGAN: every image encodes to the same fixed codes."""

    def __init__(self, codes: torch.Tensor):
        self.codes = codes

    def get_codebook_indices(self, images, disable_gumbel_softmax=False):
        return self.codes[None].repeat(images.shape[0], 1)


class RecordingTokenizer(YTTMTokenizerWrapper):
    """Records the ids every caption is decoded from."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.decoded = []

    def decode_text(self, encoded):
        self.decoded.append(encoded.clone())
        return super().decode_text(encoded)


def floats(values) -> list[float]:
    return [float(v) for v in values]


def build(params: dict, seed: int):
    model = ruDolphModel(device="cpu", **params).eval()
    state = model.state_dict()
    model.load_state_dict({**state, **parity_weights.fill_state_dict(state, seed)})
    return model


def run_rc4(model, tokenizer, vae, codebooks, ppl_log) -> dict:
    from rudolph import pipelines

    pil = Image.new("RGB", (64, 48), "orange")
    original = pipelines.ce_to_ppl
    pipelines.ce_to_ppl = lambda ce: ppl_log.append(original(ce)) or ppl_log[-1]
    ppl_text, ppl_image = pipelines.self_reranking_by_image(CAPTIONS, pil, tokenizer, model, vae, bs=3)
    t_text, t_image = pipelines.self_reranking_by_text(TEXT, list(codebooks), tokenizer, model, bs=2)
    ppl_log.clear()
    zs = pipelines.zs_clf(pil, CLASSES, model, tokenizer, vae, bs=3, template=ZS_TEMPLATE)
    zs_ppl = torch.cat(ppl_log)
    tokenizer.decoded.clear()
    pipelines.generate_captions(pil, tokenizer, model, vae, template="блюдо:", top_k=1, top_p=0.6, captions_num=2,
                                temperature=0.8, bs=2, seed=1, limit_eos=False)
    codes = pipelines.generate_codebooks(TEXT, tokenizer, model, top_k=1, top_p=0.99, images_num=2, bs=2, seed=1)
    return {"by_image": {"text_ppl": floats(ppl_text), "image_ppl": floats(ppl_image)},
            "by_text": {"text_ppl": floats(t_text), "image_ppl": floats(t_image)},
            "zero_shot": {"ppl": floats(zs_ppl), "scores": floats(zs["scores"]), "label": int(zs["label"])},
            "greedy_captions": torch.stack(tokenizer.decoded), "greedy_codes": codes}


def run_rc10(model, tokenizer, vae, codebooks, ppl_log, spc_tokens) -> dict:
    from rudolph.api import ruDolphApi

    pil = Image.new("RGB", (64, 48), "orange")
    api = ruDolphApi(model, tokenizer, vae, spc_tokens=spc_tokens, quite=True)
    original = ruDolphApi.ce_to_ppl
    api.ce_to_ppl = lambda ce: ppl_log.append(original(ce)) or ppl_log[-1]
    ppl_text, ppl_image, scores = api.self_reranking_by_image(CAPTIONS, pil, bs=3, seed=1)
    t_text, t_image, t_scores = api.self_reranking_by_text(TEXT, codebooks, bs=2, seed=1)
    ppl_log.clear()
    zs = api.zs_clf(pil, CLASSES, bs=3, r_template=ZS_TEMPLATE, seed=1)
    zs_ppl = torch.cat(ppl_log)
    decode = api.decode_text
    api.decode_text = lambda encoded: tokenizer.decoded.append(encoded.clone()) or decode(encoded)
    tokenizer.decoded.clear()
    api.generate_captions(pil, top_k=1, top_p=0.6, temperature=0.8, captions_num=2, bs=2, seed=1,
                          r_template="блюдо:")
    codes = api.generate_codebooks(TEXT, images_num=2, top_k=1, top_p=0.99, bs=2, seed=1)
    return {"by_image": {"text_ppl": floats(ppl_text), "image_ppl": floats(ppl_image), "scores": floats(scores)},
            "by_text": {"text_ppl": floats(t_text), "image_ppl": floats(t_image), "scores": floats(t_scores)},
            "zero_shot": {"ppl": floats(zs_ppl), "scores": floats(zs["scores"]), "label": int(zs["label"])},
            # rc10 decodes each caption up to its first eos: keep the (equal-length, greedy) rows
            "greedy_captions": torch.stack(tokenizer.decoded), "greedy_codes": codes}


def run_case(name: str, version: str, params: dict, seed: int) -> dict:
    params = {**BASE, **params}
    model = build(params, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    n_codes = params["image_tokens_per_dim"] ** 2
    codes = torch.randint(0, params["image_vocab_size"], (n_codes,), generator=generator)
    codebooks = torch.randint(0, params["image_vocab_size"], (3, n_codes), generator=generator)
    tokenizer = RecordingTokenizer(yttm.BPE(model=str(TOKENIZER)))
    vae, ppl_log = CodesVAE(codes), []
    if version == "rc4":
        results = run_rc4(model, tokenizer, vae, codebooks, ppl_log)
    else:
        base = params["vocab_size"] - params["l_text_seq_length"]
        spc_tokens = {token: base + i for i, token in enumerate(SPECIAL_TOKENS)}
        results = run_rc10(model, tokenizer, vae, codebooks, ppl_log, spc_tokens)
    return {"case": name, "version": version, "rudolph": rudolph.__version__, "seed": seed, "params": params,
            "codes": codes, "codebooks": codebooks, "captions": CAPTIONS, "text": TEXT, "classes": CLASSES,
            "zs_template": ZS_TEMPLATE, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=20211223)
    args = parser.parse_args()
    version = "rc4" if rudolph.__version__.endswith("rc4") else "rc10"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (case_version, params) in CASES.items():
        if case_version != version:
            continue
        fixture = run_case(name, version, params, args.seed)
        path = args.out / f"{name}.pt"
        torch.save(fixture, path)
        print(f"{path}: zero-shot ppl {fixture['results']['zero_shot']['ppl']}", file=sys.stderr)


if __name__ == "__main__":
    main()
