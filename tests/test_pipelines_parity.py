"""rudolph_ft.pipelines against the original `rudolph` pipelines (rc4 `rudolph.pipelines`, rc10 `ruDolphApi`).

Same deterministic weights on both sides (`parity_weights`), the same youtokentome tokenizer file, and the reference's
VQGAN replaced by fixed image codes: rerank perplexities, zero-shot perplexities and scores agree within 1e-5 of
their magnitude (each perplexity's own: ~1e3 in float32), greedy captions and image codes are the same tokens up to
near-ties (`numerics.assert_tokens_match`).
The default run reads fixtures (`scripts/make_pipeline_fixtures.py`); `pytest -m reference` recomputes them live.
"""

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, reference_python
from numerics import PARITY_REL, assert_close_scaled, assert_tokens_match, decoding_margins, longest_sum, top2_margins
from parity_weights import fill_state_dict

from rudolph_ft.config import RuDolphConfig
from rudolph_ft.model import RuDolph
from rudolph_ft.pipelines.captions import sample_caption_ids
from rudolph_ft.pipelines.prompts import Prompter
from rudolph_ft.pipelines.rerank import DEFAULT_TEXT_WEIGHT, combine_perplexities, score_captions, score_codes
from rudolph_ft.pipelines.sampling import SamplingSettings
from rudolph_ft.pipelines.text_to_image import sample_image_codes
from rudolph_ft.pipelines.zero_shot import class_perplexities, reference_scores
from rudolph_ft.tokenizer import Tokenizer

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread

FIXTURES = sorted((ASSETS / "pipelines").glob("*.pt"))
SCRIPT = Path(__file__).parents[1] / "scripts" / "make_pipeline_fixtures.py"
TOKENIZER = ASSETS / "tokenizer" / "yttm-captions" / "bpe.model"
GREEDY = SamplingSettings(top_k=1)


def build(fixture: dict) -> tuple[RuDolph, Prompter]:
    """Our model with the reference's weights and masks (rc10's right text sees the left text), and the prompter."""
    params = {k: v for k, v in fixture["params"].items() if k in RuDolphConfig.__dataclass_fields__}
    config = RuDolphConfig(**{"text_special_tokens": 0, "image_special_tokens": 0, **params},
                           r_text_sees_l_text=fixture["version"] == "rc10")
    model = RuDolph(config).eval()
    model.load_state_dict(fill_state_dict(model.state_dict(), fixture["seed"]), strict=True)
    return model, Prompter(config, Tokenizer.from_file(TOKENIZER), fixture["version"])


def check_scores(fixture: dict) -> dict[str, float]:
    model, prompter = build(fixture)
    results, style, diffs = fixture["results"], fixture["version"], {}

    def close(ours: torch.Tensor, expected, what: str, relative: bool = True) -> float:
        """Assert closeness (`relative`: to each value, for perplexities); returns the largest relative difference."""
        expected = torch.tensor(expected, dtype=torch.float64)
        assert_close_scaled(ours, expected, reduction=longest_sum(model.config), max_relative=PARITY_REL,
                            elementwise=relative, msg=f"{what}: ours {ours.tolist()} vs {expected.tolist()}")
        scale = expected.abs() if relative else expected.abs().max()
        return float(((ours.double() - expected).abs() / scale).max())

    text, image = score_captions(model, prompter, fixture["captions"], fixture["codes"], batch_size=2)
    diffs["by_image_text_ppl"] = close(text, results["by_image"]["text_ppl"], "rerank by image, text ppl")
    diffs["by_image_image_ppl"] = close(image, results["by_image"]["image_ppl"], "rerank by image, image ppl")
    if "scores" in results["by_image"]:  # rc10's combination, on its own perplexities (it amplifies their rounding)
        combined = combine_perplexities(torch.tensor(results["by_image"]["text_ppl"]),
                                        torch.tensor(results["by_image"]["image_ppl"]),
                                        DEFAULT_TEXT_WEIGHT["image", style])
        diffs["by_image_scores"] = close(combined, results["by_image"]["scores"], "rerank by image scores", False)
    text, image = score_codes(model, prompter, fixture["text"], fixture["codebooks"], batch_size=2)
    diffs["by_text_text_ppl"] = close(text, results["by_text"]["text_ppl"], "rerank by text, text ppl")
    diffs["by_text_image_ppl"] = close(image, results["by_text"]["image_ppl"], "rerank by text, image ppl")
    if "scores" in results["by_text"]:
        combined = combine_perplexities(torch.tensor(results["by_text"]["text_ppl"]),
                                        torch.tensor(results["by_text"]["image_ppl"]),
                                        DEFAULT_TEXT_WEIGHT["text", style])
        diffs["by_text_scores"] = close(combined, results["by_text"]["scores"], "rerank by text scores", False)
    texts = [fixture["zs_template"].format(c) for c in fixture["classes"]]
    ppl = class_perplexities(model, prompter, fixture["codes"], texts, batch_size=4)
    diffs["zero_shot_ppl"] = close(ppl, results["zero_shot"]["ppl"], "zero-shot perplexities")
    diffs["zero_shot_scores"] = close(reference_scores(ppl), results["zero_shot"]["scores"], "zero-shot scores", False)
    # the label is the lowest perplexity: a near-tie of the two lowest (relative gap < NEAR_TIE) may flip it
    label, gap = torch.tensor([[results["zero_shot"]["label"]]]), top2_margins(-ppl.log()).reshape(1, 1)
    assert_tokens_match(ppl.argmin().reshape(1, 1), label, gap, sequential=False, what="zero-shot label")
    return diffs


def check_greedy(fixture: dict) -> None:
    model, prompter = build(fixture)
    expected = fixture["results"]["greedy_captions"]  # (2, r_text_seq_length): bos (task token) template sampled
    left, codes, prefix = prompter.empty_left(), fixture["codes"][None], prompter.right_prefix("блюдо:")
    ours = sample_caption_ids(model, codes, left, prefix, 2, GREEDY, prompter=prompter, stop_at_eos=False)
    margins = decoding_margins(model, torch.cat([left[None], codes], 1).expand(2, -1), ours, None,
                               GREEDY, head="text", columns=prompter.text_columns, given=prefix.numel())
    width = expected.shape[1]
    assert_tokens_match(ours[:, :width], expected, margins[:, :width], sequential=True, what="greedy captions")
    left = prompter.left_prompt(fixture["text"])
    codes = sample_image_codes(model, left, 2, GREEDY, prompter=prompter)
    margins = decoding_margins(model, left[None].expand(2, -1), codes, None, GREEDY, head="image",
                               columns=min(prompter.image_columns, model.config.image_vocab_size))
    assert_tokens_match(codes, fixture["results"]["greedy_codes"], margins, sequential=True, what="greedy codes")


def test_fixtures_cover_both_references():
    loaded = [torch.load(path, weights_only=True) for path in FIXTURES]
    assert {f["version"] for f in loaded} == {"rc4", "rc10"}
    assert any(f["params"]["l_text_seq_length"] != f["params"]["r_text_seq_length"] for f in loaded)
    assert any(f["params"].get("text_special_tokens") for f in loaded)
    assert sum(path.stat().st_size for path in FIXTURES) < 100_000


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_scores_match_reference_fixture(path):
    check_scores(torch.load(path, weights_only=True))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_greedy_tokens_match_reference_fixture(path):
    check_greedy(torch.load(path, weights_only=True))


@pytest.mark.reference
@pytest.mark.parametrize("version", ["rc10", "rc4"])
def test_matches_reference_live(tmp_path, version):
    python = reference_python(version)
    subprocess.run([python, str(SCRIPT), "--out", str(tmp_path), "--seed", "11"], check=True, capture_output=True)
    paths = sorted(tmp_path.glob(f"*-{version}.pt"))
    assert paths
    for path in paths:
        fixture = torch.load(path, weights_only=True)
        check_scores(fixture)
        check_greedy(fixture)
