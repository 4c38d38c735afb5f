"""rudolph_ft.pipelines on tiny bundles: captions (KV cache, seeds, early stop), reranking, zero-shot, images,
nutrition prediction, image inputs. Reference parity lives in test_pipelines_parity.py."""

import importlib.util
import json

import pytest
import torch
from conftest import ASSETS
from numerics import assert_scalar_close, assert_tokens_match, decoding_margins, top2_margins
from PIL import Image

from rudolph_ft.data.images import ImageLoadError
from rudolph_ft.pipelines import (
    Prompter,
    generate_captions,
    generate_captions_batch,
    generate_images,
    image_codes,
    predict_nutrition,
    predict_nutrition_batch,
    rerank_by_image,
    rerank_by_text,
    zero_shot_classify,
)
from rudolph_ft.pipelines.captions import CaptionSamples, sample_caption_ids
from rudolph_ft.pipelines.inputs import image_size, image_tensor
from rudolph_ft.pipelines.rerank import combine_perplexities
from rudolph_ft.pipelines.sampling import SamplingSettings, draw_uniforms, filter_logits, sample
from rudolph_ft.pipelines.text_to_image import sample_image_codes

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread

PHOTOS = sorted((ASSETS / "images").glob("*.jpg"))
ARTICLE = SamplingSettings(top_k=16, top_p=0.6, temperature=0.8)


@pytest.fixture(scope="module")
def components():
    return bundle.tiny_components(seed=1)


@pytest.fixture(scope="module")
def scripted():
    return bundle.tiny_components(seed=1, scripted=bundle.SCRIPT)


# Near-ties: decisions that another summation order (batch size, KV cache) may flip --------------------------------
def code_margins(components, images) -> torch.Tensor:
    """(B, image_seq_length) top-2 margins of the VQGAN logits that picked each image's codes."""
    pixels = torch.stack([image_tensor(image, image_size(components)) for image in images])
    with torch.no_grad():
        return top2_margins(components.vqgan.encode_logits(pixels), dim=1).flatten(1)


def caption_margins(model, prompter, codes, ids, given: int, *, n: int, seed: int) -> torch.Tensor:
    """Margins of `sample_caption_ids`' draws (ARTICLE settings, empty left text; `n` rows per image of `codes`,
    the first `given` ids of each the template)."""
    prompt = torch.cat([prompter.empty_left().expand(len(codes), -1), codes], dim=1).repeat_interleave(n, dim=0)
    uniforms = draw_uniforms(n, ids.shape[1] - given, seed).repeat(len(codes), 1)
    return decoding_margins(model, prompt, ids, uniforms, ARTICLE, head="text", columns=prompter.text_columns,
                            given=given)


def assert_same_samples(components, ours: CaptionSamples, expected: CaptionSamples, image, *, n: int, seed: int,
                        what: str) -> None:
    """The same captions of one image (default `generate_captions` settings), up to near-ties: its codes first."""
    assert_tokens_match(ours.codes[None], expected.codes[None], code_margins(components, [image]), sequential=False,
                        what=f"{what}: image codes")
    if torch.equal(ours.codes, expected.codes):  # else a code flipped at a near-tie (warned): another prompt
        prompter = Prompter(components.model.config, components.tokenizer, "rc4")
        margins = caption_margins(components.model, prompter, expected.codes[None], expected.ids,
                                  prompter.right_prefix("блюдо:").numel(), n=n, seed=seed)
        assert_tokens_match(ours.ids, expected.ids, margins, sequential=True, what=f"{what}: captions")


# Sampling ---------------------------------------------------------------------------------------------------------
def test_filter_logits_follows_transformers_top_k_then_top_p():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.3, 0.15, 0.1]]))
    inf = float("-inf")
    assert filter_logits(logits, top_k=2)[0, [0, 3, 4]].tolist() == [inf, inf, inf]
    # top-p 0.6: sorted ascending cumulative 0.05, 0.15, 0.3, 0.6, 1.0 -> removed where <= 0.4: keeps 0.4 and 0.3
    kept = filter_logits(logits, top_p=0.6)[0] > inf
    assert kept.tolist() == [False, True, True, False, False]
    # ties at the k-th value are all kept, and top-p always keeps the most likely token
    assert (filter_logits(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), top_k=2) > inf).sum() == 2
    assert (filter_logits(logits, top_p=0.01) > inf).tolist() == [[False, True, False, False, False]]


def test_sample_draws_by_inverse_cdf_and_greedy_is_argmax():
    logits = torch.log(torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]))
    low = sample(logits, torch.tensor([0.1, 0.05]), SamplingSettings())
    high = sample(logits, torch.tensor([0.9, 0.95]), SamplingSettings())
    assert low.tolist() == [0, 0] and high.tolist() == [1, 2]
    assert sample(logits, torch.zeros(2), SamplingSettings(top_k=1)).tolist() == [0, 2]
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0)


# Captions ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["rc4", "rc10"])
def test_cached_decoding_equals_full_recomputation(components, style):
    model = components.model
    prompter = Prompter(model.config, components.tokenizer, style)
    codes = image_codes(components, PHOTOS[:2])
    args = (model, codes, prompter.empty_left(), prompter.right_prefix("блюдо:"), 2, ARTICLE)
    cached = sample_caption_ids(*args, prompter=prompter, seed=5, stop_at_eos=False)
    recomputed = sample_caption_ids(*args, prompter=prompter, seed=5, stop_at_eos=False, use_cache=False)
    margins = caption_margins(model, prompter, codes, recomputed, args[3].numel(), n=2, seed=5)
    assert_tokens_match(cached, recomputed, margins, sequential=True, what=f"{style} cached captions")
    left = prompter.left_prompt("борщ")
    cached = sample_image_codes(model, left, 1, ARTICLE, prompter=prompter, seed=3)
    recomputed = sample_image_codes(model, left, 1, ARTICLE, prompter=prompter, seed=3, use_cache=False)
    margins = decoding_margins(model, left[None], recomputed, draw_uniforms(1, recomputed.shape[1], 3), ARTICLE,
                               head="image", columns=min(prompter.image_columns, model.config.image_vocab_size))
    assert_tokens_match(cached, recomputed, margins, sequential=True, what=f"{style} cached image codes")


def test_same_seed_same_captions_whatever_the_batching(components):
    photo = PHOTOS[0]
    (first,) = generate_captions_batch(components, [photo], n=6, seed=7)
    assert len(first.texts) == 6
    assert generate_captions(components, photo, n=6, seed=7, unique=False) == first.texts  # the same computation
    # other batch sizes sum in another order: equal up to near-ties
    (smaller,) = generate_captions_batch(components, [photo], n=6, seed=7, batch_size=4)
    assert_same_samples(components, smaller, first, photo, n=6, seed=7, what="batch size 4")
    # an image's captions do not depend on the other images of the call
    batch = generate_captions_batch(components, [PHOTOS[1], photo], n=6, seed=7, batch_size=12)
    assert_same_samples(components, batch[1], first, photo, n=6, seed=7, what="two images")
    assert generate_captions(components, photo, n=6, seed=8, unique=False) != first.texts
    assert all(text.startswith("блюдо:") for text in first.texts if text)


def test_captions_stop_at_eos_and_batches_stop_early(scripted):
    calls = []
    original = scripted.model.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    scripted.model.forward = counting_forward
    try:
        captions = generate_captions(scripted, PHOTOS[0], n=4)
    finally:
        del scripted.model.forward
    assert captions == [bundle.SCRIPT]
    caption_tokens = len(scripted.tokenizer.encode(bundle.SCRIPT)) + 2
    assert len(calls) < caption_tokens < scripted.model.config.r_text_seq_length  # stopped long before the end


def test_caption_progress_counts_every_decoding_step_of_every_batch(components):
    told = []
    samples = generate_captions_batch(components, PHOTOS[:2], n=3, seed=7, batch_size=4, stop_at_eos=False,
                                      progress=lambda done, total: told.append((done, total)))
    prefix = Prompter(components.model.config, components.tokenizer, "rc4").right_prefix("блюдо:").numel()
    steps = components.model.config.r_text_seq_length - prefix
    total = 2 * steps  # batch 4 holds one image's 3 captions: two images, two batches
    assert told[-1] == (total, total) and {t for _, t in told} == {total}
    assert [d for d, _ in told] == sorted(d for d, _ in told)
    again = generate_captions_batch(components, PHOTOS[:2], n=3, seed=7, batch_size=4, stop_at_eos=False)
    assert [s.texts for s in again] == [s.texts for s in samples]  # telling progress changes nothing


def test_pipelines_run_in_eval_mode_and_give_the_model_back_as_it_was(components):
    components.model.train()
    try:
        dropout_free = generate_captions(components, PHOTOS[0], n=2, seed=3, unique=False)
        assert components.model.training
    finally:
        components.model.eval()
    assert generate_captions(components, PHOTOS[0], n=2, seed=3, unique=False) == dropout_free
    assert not components.model.training


def test_non_text_ids_end_the_caption(components):
    model = components.model
    prompter = Prompter(model.config, components.tokenizer, "rc4")
    with torch.no_grad():  # make a left-text special token (not text) the most likely output everywhere
        model.to_logits[1].bias[prompter.bpe_vocab_size + 1] += 1e4
    try:
        ids = sample_caption_ids(model, image_codes(components, PHOTOS[:1]), prompter.empty_left(),
                                 prompter.right_prefix("блюдо:"), 2, ARTICLE, prompter=prompter)
    finally:
        with torch.no_grad():
            model.to_logits[1].bias[prompter.bpe_vocab_size + 1] -= 1e4
    prefix = prompter.right_prefix("блюдо:").numel()
    assert (ids[:, prefix] == components.tokenizer.eos_id).all() and (ids[:, prefix + 1:] == 0).all()
    assert prompter.decode(ids[0]) == "блюдо:"


# Reranking and zero-shot ---------------------------------------------------------------------------------------------
def test_rerank_by_image_orders_by_image_perplexity(components):
    captions = ["блюдо: борщ;", "блюдо: плов; ккал: 250;", "суп"]
    ranked = rerank_by_image(components, captions, PHOTOS[0])
    assert sorted(r.text for r in ranked) == sorted(captions)
    assert [r.score for r in ranked] == sorted(r.score for r in ranked)
    assert all(r.score == r.image_perplexity for r in ranked)  # rc4: the article sorts by the image perplexity
    assert rerank_by_image(components, [], PHOTOS[0]) == []
    rc10 = rerank_by_image(components, captions, PHOTOS[0], style="rc10")
    assert [r.score for r in rc10] == sorted(r.score for r in rc10)


def test_rerank_by_text_accepts_images_or_codes(components):
    ranked = rerank_by_text(components, "борщ", PHOTOS[:3])
    assert sorted(r.index for r in ranked) == [0, 1, 2]
    assert [r.score for r in ranked] == sorted(r.score for r in ranked)
    by_codes = rerank_by_text(components, "борщ", image_codes(components, PHOTOS[:3]))
    assert [r.index for r in by_codes] == [r.index for r in ranked]


def test_combined_score_survives_a_single_candidate():
    one = combine_perplexities(torch.tensor([5.0]), torch.tensor([7.0]), 0.05)
    assert torch.isfinite(one).all()


def test_zero_shot_picks_the_scripted_dish(scripted):
    result = zero_shot_classify(scripted, PHOTOS[0], list(bundle.DISHES), batch_size=4)
    assert result.label == "борщ" and result.index == 0
    for weights in (result.probabilities, result.scores):  # softmax: normaliser and sum round ~len(weights) times
        assert_scalar_close(sum(weights), 1.0, reduction=len(weights))
    assert result.ranked()[0][0] == "борщ"
    assert min(range(6), key=result.scores.__getitem__) == 0  # the reference's scores: lowest is predicted
    json.dumps(result.to_dict())
    with pytest.raises(ValueError, match="no '{}'"):
        zero_shot_classify(scripted, PHOTOS[0], ["борщ"], template="блюдо")


# Text to image -----------------------------------------------------------------------------------------------------
def test_generate_images_decodes_reranks_and_grids(components, tmp_path):
    result = generate_images(components, "борщ", n=3, seed=2, rerank=True)
    assert len(result.images) == 3 and result.images[0].size == (64, 64)
    assert result.codes.shape == (3, 64) and int(result.codes.max()) < components.vqgan.num_codes
    assert [r.score for r in result.ranking] == sorted(r.score for r in result.ranking)
    path = result.save_grid(tmp_path / "grid.png", columns=3)
    assert Image.open(path).size == (3 * 66 + 2, 66 + 2)
    again = generate_images(components, "борщ", n=3, seed=2)
    assert torch.equal(again.codes, result.codes[torch.tensor([r.index for r in result.ranking]).argsort()])


# Nutrition and inputs ----------------------------------------------------------------------------------------------
def test_predict_nutrition_reads_the_best_captions(scripted):
    prediction = predict_nutrition(scripted, PHOTOS[0], n=4)
    assert (prediction.dish, prediction.kcal, prediction.protein, prediction.fat, prediction.carbs) == \
        ("борщ", 70.0, 3.5, 4.0, 6.0)
    assert prediction.evidence[0].count == 4 and prediction.evidence[0].used
    assert "борщ: 70 kcal" in prediction.summary()
    data = json.loads(json.dumps(prediction.to_dict(), ensure_ascii=False))
    assert data["image"] == str(PHOTOS[0]) and data["evidence"][0]["parsed"]["kcal"] == 70.0


def test_predict_nutrition_on_junk_captions_gives_nones_not_errors(components):
    predictions = predict_nutrition_batch(components, PHOTOS[:2], n=3, best=2)
    assert len(predictions) == 2
    for prediction in predictions:
        assert sum(e.used for e in prediction.evidence) <= 2
        json.dumps(prediction.to_dict())


def test_image_inputs_paths_pil_and_tensors_agree(components):
    from rudolph_ft.data.images import load_image, preprocess_image

    pil = load_image(PHOTOS[0])
    tensor = preprocess_image(pil, 64)
    codes = image_codes(components, [PHOTOS[0], pil, tensor, (tensor * 255).to(torch.uint8)])
    assert codes.shape == (4, 64)  # the same pixels in four batch rows (a kernel may sum rows in other orders)
    assert_tokens_match(codes[1:], codes[:1].expand(3, -1), code_margins(components, [PHOTOS[0]]).expand(3, -1),
                        sequential=False, what="one image as four inputs")
    with pytest.raises(ImageLoadError, match="missing.jpg"):
        image_codes(components, [ASSETS / "missing.jpg"])
