"""The decoding speed paths agree with the plain ones: a forked KV cache (shared prefix read, not copied) against a
copied one, and the few-rows GEMM orientation against `F.linear`; the pipelines that use them against their
copy-based selves."""

import pytest
import torch
from numerics import assert_close_scaled, longest_sum
from test_model import SMALL, random_ids

import rudolph_ft.model.rudolph as rudolph_module
from rudolph_ft.model import KVCache, RuDolph
from rudolph_ft.model.rudolph import few_rows_linear


@pytest.fixture
def model():
    torch.manual_seed(0)
    return RuDolph(SMALL).eval()


def prefilled(model, ids: torch.Tensor, length: int) -> KVCache:
    cache = KVCache(SMALL, ids.shape[0])
    model(ids[:, :length], cache=cache)
    return cache


@pytest.mark.parametrize("rows", [[0, 0, 0, 1, 1, 1], [1, 0, 0], [2], [0, 1, 2, 2]])
@pytest.mark.parametrize("split", [[1, 1, 1], [3, 2], [1]])
@pytest.mark.parametrize("prefix", [SMALL.l_text_seq_length, SMALL.l_text_seq_length + SMALL.image_seq_length + 1])
def test_forked_cache_decodes_like_a_copied_one(model, rows, split, prefix):
    """Image-major rows share one prefix per image (group > 1); any other order falls back to one per row."""
    ids = random_ids(SMALL, 3, seed=1)
    cache = prefilled(model, ids, prefix)
    rows = torch.tensor(rows)
    copied, forked = cache.index_select(rows), cache.fork(rows)
    assert forked.keys.shape[3] == SMALL.total_seq_length - prefix  # only the rows' own positions are stored
    new = random_ids(SMALL, len(rows), seed=2)[:, prefix:]
    start = 0
    with torch.inference_mode():
        for length in split:
            piece = new[:, start:start + length]
            expected = model(piece, cache=copied, head="text").logits
            ours = model(piece, cache=forked, head="text").logits
            assert_close_scaled(ours, expected, reduction=longest_sum(SMALL))
            start += length
    assert forked.length == copied.length == prefix + start
    assert cache.length == prefix  # the source is read, never written


def test_forked_cache_is_not_forked_or_selected_again(model):
    cache = prefilled(model, random_ids(SMALL, 1), SMALL.l_text_seq_length).fork(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="made by `fork`"):
        cache.fork(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="made by `fork`"):
        cache.index_select(torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("rows", [1, 2, 16, 64, 65])
@pytest.mark.parametrize("bias", [True, False])
def test_few_rows_linear_equals_linear(rows, bias):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 1, 48, generator=generator)
    weight = torch.randn(80, 48, generator=generator)
    b = torch.randn(80, generator=generator) if bias else None
    ours = few_rows_linear(x, weight, b)
    assert ours.shape == (rows, 1, 80) and ours.is_contiguous()
    assert_close_scaled(ours, torch.nn.functional.linear(x, weight, b), reduction=48)


def test_decoding_step_with_and_without_the_few_rows_gemm(model, monkeypatch):
    ids = random_ids(SMALL, 4, seed=3)
    prefix = SMALL.l_text_seq_length + SMALL.image_seq_length
    with torch.inference_mode():
        expected_cache, ours_cache = prefilled(model, ids, prefix), prefilled(model, ids, prefix)
        ours = model(ids[:, prefix:prefix + 2], cache=ours_cache, head="text").logits
        monkeypatch.setattr(rudolph_module, "FEW_ROWS_GEMM", 0)
        expected = model(ids[:, prefix:prefix + 2], cache=expected_cache, head="text").logits
    assert_close_scaled(ours, expected, reduction=longest_sum(SMALL))


def test_hooks_on_a_plain_linear_still_run_in_a_decoding_step(model):
    """`project` bypasses `nn.Linear.forward` only when nothing is attached that the forward would run."""
    ids = random_ids(SMALL, 2, seed=4)
    prefix = SMALL.l_text_seq_length + SMALL.image_seq_length
    seen = []
    handle = model.transformer.layers[0].mlp.dense_h_to_4h.register_forward_hook(
        lambda module, args, output: seen.append(output.shape))
    try:
        with torch.inference_mode():
            cache = prefilled(model, ids, prefix).fork(torch.tensor([0, 1]))
            model(ids[:, prefix:prefix + 1], cache=cache, head="text")
    finally:
        handle.remove()
    assert seen[-1] == (2, 1, 4 * SMALL.hidden_size)
