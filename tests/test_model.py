"""RuDolph behaviour beyond reference parity: KV cache, masks, precision, checkpointing, loading and saving."""

import pytest
import torch
from numerics import assert_close_scaled, assert_scalar_close, longest_sum

from rudolph_ft.config import MODEL_PRESETS, RuDolphConfig
from rudolph_ft.hub import WeightsNotFoundError
from rudolph_ft.model import KVCache, RuDolph, load_model, save_model
from rudolph_ft.model.masks import MASK_KINDS, build_masks, layer_mask_kind

SMALL = RuDolphConfig(num_layers=6, hidden_size=32, num_attention_heads=4, l_text_seq_length=8,
                      image_tokens_per_dim=4, r_text_seq_length=10, kernel_size=3, last_kernel_size=5,
                      text_special_tokens=8, image_special_tokens=4, vocab_size=120 + 8, image_vocab_size=64,
                      attention_dropout_prob=0.0, output_dropout_prob=0.0)
WEIGHTS = (0.01, 1.0, 7.0)


def random_ids(config: RuDolphConfig, batch: int, seed: int = 0, r_used: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    left = torch.zeros(batch, config.l_text_seq_length, dtype=torch.long)
    left[:, :3] = torch.randint(4, config.vocab_size, (batch, 3), generator=generator)
    image = torch.randint(0, config.image_vocab_size, (batch, config.image_seq_length), generator=generator)
    right = torch.randint(4, config.vocab_size, (batch, config.r_text_seq_length), generator=generator)
    right[:, 0] = 2
    if r_used is not None:
        right[:, r_used - 1], right[:, r_used:] = 3, 0
    return torch.cat([left, image, right], dim=1)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return RuDolph(SMALL).eval()


def test_every_preset_builds_its_layout():
    for name, config in MODEL_PRESETS.items():
        assert config.total_seq_length == config.l_text_seq_length + config.image_tokens_per_dim**2 + \
            config.r_text_seq_length, name
        assert config.text_vocab_size >= config.image_vocab_total, name  # needed by the left-text loss
    assert MODEL_PRESETS["350M"].hub.repo_id == "shonenkov-AI/RuDOLPH-350M-v2"
    assert MODEL_PRESETS["350M"].text_special_tokens == 384 and MODEL_PRESETS["350M_v1"].text_special_tokens == 0
    # the 350M preset has the reference's 354,638,656 parameters (meta device: no memory used)
    with torch.device("meta"):
        assert RuDolph(MODEL_PRESETS["350M"]).num_parameters() == 354_638_656


def test_layer_mask_kinds_follow_reference_rule():
    kinds = [MASK_KINDS[layer_mask_kind(i, 24)] for i in range(24)]
    assert kinds[:8] == ["row", "col", "row", "conv", "row", "col", "row", "conv"]
    assert kinds[-1] == "last_conv" and kinds.count("col") == 6


def test_right_text_attention_to_left_text_follows_config():
    blocked, seeing = build_masks(SMALL), build_masks(SMALL.replace(r_text_sees_l_text=True))
    right = slice(SMALL.total_seq_length - SMALL.r_text_seq_length, None)
    left = slice(0, SMALL.l_text_seq_length)
    assert not blocked[:, right, left].any() and seeing[:, right, left].all()
    # image always sees the left text, and every mask is causal
    image = slice(SMALL.l_text_seq_length, SMALL.l_text_seq_length + SMALL.image_seq_length)
    assert blocked[:, image, left].all()
    assert not torch.triu(blocked.int(), diagonal=1).any()


@pytest.mark.parametrize("split", [[1] * 34, [8, 16, 1, 1, 8], [24, 10], [34]])
def test_kv_cache_decoding_equals_full_forward(model, split):
    ids = random_ids(SMALL, 3)
    full = model(ids).logits
    cache, pieces, start = KVCache(SMALL, 3), [], 0
    for length in split:
        pieces.append(model(ids[:, start:start + length], cache=cache).logits)
        start += length
    assert cache.length == SMALL.total_seq_length
    assert_close_scaled(torch.cat(pieces, dim=1), full, reduction=longest_sum(SMALL))


def test_cache_repeat_and_heads(model):
    ids = random_ids(SMALL, 1)
    prefix = SMALL.l_text_seq_length + SMALL.image_seq_length
    cache = KVCache(SMALL, 1)
    model(ids[:, :prefix], cache=cache)
    cache = cache.repeat_interleave(4)
    step = model(ids[:, prefix:prefix + 1].repeat(4, 1), cache=cache, head="text", last_only=True).logits
    full = model(ids).logits[:, prefix, : SMALL.text_vocab_size]
    assert step.shape == (4, 1, SMALL.text_vocab_size)
    assert_close_scaled(step[:, 0], full.expand(4, -1), reduction=longest_sum(SMALL))
    image_logits = model(ids, head="image").logits
    assert image_logits.shape[-1] == SMALL.image_vocab_total


def test_losses_match_full_logits_route(model):
    """Segment losses computed from the joint logits by hand (the reference's slicing) equal ours."""
    ids = random_ids(SMALL, 2, r_used=6)
    out = model(ids, loss_weights=WEIGHTS, return_logits=True)
    logits, text = out.logits, SMALL.text_vocab_size
    l_len, image_end = SMALL.l_text_seq_length, SMALL.l_text_seq_length + SMALL.image_seq_length
    special = torch.arange(l_len) + text - l_len
    l_text = torch.where(ids[:, :l_len] == 0, special, ids[:, :l_len])
    ce = torch.nn.functional.cross_entropy
    left = ce(logits[:, :l_len, :text].flatten(0, 1), torch.cat([l_text[:, 1:], ids[:, l_len:l_len + 1]], 1).flatten())
    image = ce(logits[:, l_len:image_end - 1, text:].flatten(0, 1), ids[:, l_len + 1:image_end].flatten())
    right = ce(logits[:, image_end:-1, :text].flatten(0, 1), ids[:, image_end + 1:].flatten(), ignore_index=0)
    for ours, expected in ((out.l_text_loss, left), (out.image_loss, image), (out.r_text_loss, right)):
        assert_scalar_close(ours, expected, reduction=longest_sum(SMALL, 2))
    assert_scalar_close(out.loss, (0.01 * left + image + 7 * right) / 8.01, reduction=longest_sum(SMALL, 2))


def _first_layer_inputs(model: RuDolph) -> list[tuple[int, ...]]:
    """Shapes of every input the first layer sees (prefix pass and rest), recorded by a forward hook."""
    shapes = []
    model.transformer.layers[0].register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    return shapes


def _losses_and_grads(model: RuDolph, ids: torch.Tensor, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(ids, loss_weights=WEIGHTS, **kwargs)
    out.loss.backward()
    losses = [float(getattr(out, name).detach()) for name in ("loss", "l_text_loss", "image_loss", "r_text_loss")]
    return losses, {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_losses_and_grads(ours, expected, rows: int) -> None:
    """`_losses_and_grads` results equal up to float32 summation order (shapes differ, so kernels sum differently)."""
    for name, a, b in zip(("loss", "l_text_loss", "image_loss", "r_text_loss"), ours[0], expected[0], strict=True):
        assert_scalar_close(a, b, reduction=longest_sum(SMALL, rows), msg=name)
    assert ours[1].keys() == expected[1].keys()
    for name, grad in ours[1].items():
        assert_close_scaled(grad, expected[1][name], reduction=longest_sum(SMALL, rows), msg=name)


def test_loss_only_forward_skips_right_text_nothing_reads():
    """Positions after the last non-pad label are left out of a loss-only forward; losses and gradients equal
    those of the full forward (which the parity tests compare with the reference)."""
    model = RuDolph(SMALL).eval()
    ids = torch.cat([random_ids(SMALL, 1, seed=1, r_used=6), random_ids(SMALL, 1, seed=2, r_used=4)])
    image_end = SMALL.l_text_seq_length + SMALL.image_seq_length
    shapes = _first_layer_inputs(model)
    trimmed = _losses_and_grads(model, ids)
    assert shapes[-1][1] == image_end + 5  # right positions 0..4 predict the labels 1..5 (eos at 5)
    full = _losses_and_grads(model, ids, return_logits=True)
    assert shapes[-1][1] == SMALL.total_seq_length
    assert_same_losses_and_grads(trimmed, full, rows=2)
    # a caption using every right position keeps them all but the last, whose label would lie past the end
    ids = random_ids(SMALL, 2)
    model(ids, loss_weights=WEIGHTS)
    assert shapes[-1][1] == SMALL.total_seq_length - 1


@pytest.mark.parametrize("checkpointing", [False, True])
def test_left_text_shared_by_the_batch_is_computed_once(checkpointing):
    """A left text equal in every row is computed once and attended by every row: logits, losses and gradients
    equal the per-row computation."""
    torch.manual_seed(0)
    model = RuDolph(SMALL.replace(gradient_checkpointing=checkpointing)).train()  # train: checkpointing on
    model.transformer.layers.apply(lambda m: setattr(m, "training", False))  # ...dropout-free layers
    ids = random_ids(SMALL, 3, r_used=7)
    ids[:, :SMALL.l_text_seq_length] = ids[:1, :SMALL.l_text_seq_length]
    shapes = _first_layer_inputs(model)
    shared = _losses_and_grads(model, ids, return_logits=True)
    # one sequence: the left text once, then the three rows' image and right text
    assert shapes[0] == (1, SMALL.l_text_seq_length + 3 * (SMALL.total_seq_length - SMALL.l_text_seq_length),
                         SMALL.hidden_size)
    with torch.no_grad():
        logits = model(ids).logits
    model.share_prefix = False
    shapes.clear()
    separate = _losses_and_grads(model, ids, return_logits=True)
    assert shapes[0] == (3, SMALL.total_seq_length, SMALL.hidden_size)
    with torch.no_grad():
        assert_close_scaled(logits, model(ids).logits, reduction=longest_sum(SMALL))
    assert_same_losses_and_grads(shared, separate, rows=3)
    # rows with different left texts are computed per row
    model.share_prefix = True
    shapes.clear()
    model(random_ids(SMALL, 3))
    assert shapes == [(3, SMALL.total_seq_length, SMALL.hidden_size)]
    # with dropout (the CPU training attention path) the shared prefix runs too
    dropping = RuDolph(SMALL.replace(attention_dropout_prob=0.1, output_dropout_prob=0.1)).train()
    out = dropping(ids, loss_weights=WEIGHTS)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(dropping.text_embeddings.weight.grad).all()


def test_fully_masked_rows_stay_finite_forward_and_backward():
    model = RuDolph(SMALL).train()
    ids = random_ids(SMALL, 2, r_used=4)
    mask = torch.ones(2, 1, SMALL.total_seq_length, SMALL.total_seq_length)
    mask[0, :, -5:] = 0  # rc4-style: rows after the right text's end see nothing
    out = model(ids, attention_mask=mask, loss_weights=WEIGHTS, return_logits=True)
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(1)
    plain = RuDolph(SMALL).train()
    checkpointed = RuDolph(SMALL.replace(gradient_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    ids = random_ids(SMALL, 2)
    for model in (plain, checkpointed):
        model(ids, loss_weights=WEIGHTS).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert_close_scaled(a.grad, b.grad, reduction=longest_sum(SMALL, 2), msg=name)


def test_dropout_follows_config_and_mode():
    config = SMALL.replace(attention_dropout_prob=0.5, output_dropout_prob=0.5)
    model = RuDolph(config)
    ids = random_ids(config, 1)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_runs_under_autocast(model, dtype):
    ids = random_ids(SMALL, 2, r_used=5)
    model.train()
    with torch.autocast("cpu", dtype=dtype):
        out = model(ids, loss_weights=WEIGHTS)
    out.loss.backward()
    reference = RuDolph(SMALL).eval()
    reference.load_state_dict(model.state_dict())
    expected = reference(ids, loss_weights=WEIGHTS).loss
    # one rounding of the loss in the autocast precision: the many low-precision roundings inside are independent
    # and average out over the loss's tokens (measured: bf16 ~0.02 eps * loss, fp16 ~0.003)
    assert torch.isfinite(out.loss)
    assert_scalar_close(out.loss, expected, reduction=1, eps=torch.finfo(dtype).eps)


def test_clear_errors_for_bad_inputs(model):
    ids = random_ids(SMALL, 1)
    bad = ids.clone()
    bad[0, SMALL.l_text_seq_length] = SMALL.image_vocab_total
    with pytest.raises(ValueError, match="image token id"):
        model(bad)
    with pytest.raises(ValueError, match="longer than the model"):
        model(torch.cat([ids, ids], dim=1))
    with pytest.raises(ValueError, match="whole segments"):
        model(ids[:, :20], loss_weights=WEIGHTS)
    with pytest.raises(ValueError, match="integer tensor"):
        model(ids.float())


def test_save_and_load_roundtrip(model, tmp_path):
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config and not loaded.training
    ids = random_ids(SMALL, 2)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_official_checkpoint_file_loads_with_weights_only(model, tmp_path):
    """A pickled `pytorch_model.bin` with the reference's float mask buffers (rc4-style masks here)."""
    state = dict(model.state_dict())
    masks = build_masks(SMALL)
    state.update({f"transformer.{kind}_mask": masks[i].float() for i, kind in enumerate(MASK_KINDS)})
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="say which preset"):
        load_model(tmp_path / "pytorch_model.bin")
    MODEL_PRESETS["_test_small"] = SMALL
    try:
        loaded = load_model(tmp_path, preset="_test_small")
    finally:
        del MODEL_PRESETS["_test_small"]
    assert loaded.config.r_text_sees_l_text is False
    ids = random_ids(SMALL, 1)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_checkpoint_for_another_layout_is_a_clear_error(model, tmp_path):
    save_model(model, tmp_path / "m")
    from safetensors.torch import load_file

    state = load_file(tmp_path / "m" / "model.safetensors")
    with pytest.raises(ValueError, match="does not fit the config"):
        from rudolph_ft.model import model_from_state_dict

        model_from_state_dict(SMALL.replace(hidden_size=64), state)


def test_offline_missing_weights_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as error:
        load_model("350M", cache_dir=tmp_path)
    message = str(error.value)
    assert "shonenkov-AI/RuDOLPH-350M-v2" in message and "pytorch_model.bin" in message
    assert "local path" in message


def test_offline_switch_and_cached_file(monkeypatch, tmp_path, model):
    """A file already in the HF cache layout loads with offline=True (no network involved)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(WeightsNotFoundError):
        load_model("350M_v1", cache_dir=tmp_path, offline=True)
    snapshot = tmp_path / "models--sberbank-ai--RuDOLPH-350M" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--sberbank-ai--RuDOLPH-350M" / "refs").mkdir()
    (tmp_path / "models--sberbank-ai--RuDOLPH-350M" / "refs" / "main").write_text("0" * 40)
    torch.save({"not": torch.zeros(1)}, snapshot / "pytorch_model.bin")
    with pytest.raises(ValueError, match="does not fit the config"):  # found in the cache, then checked
        load_model("350M_v1", cache_dir=tmp_path, offline=True)


def test_random_preset_and_unknown_name():
    model = load_model("tiny", pretrained=False)
    assert isinstance(model, RuDolph) and model.config.name == "tiny"
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_model("no-such-model")
    with pytest.raises(WeightsNotFoundError, match="no published weights"):
        load_model("tiny")


def test_cpu_dropout_statistics_and_gradient():
    from rudolph_ft.model.rudolph import dropout

    torch.manual_seed(3)
    x = torch.ones(1_000_003, requires_grad=True)  # odd size: the last 64-bit word is only partly used
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 2e-3
    assert abs(y.mean().item() - 1.0) < 5e-3  # rescaled: expectation unchanged
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], y[kept])
    assert dropout(x, 0.1, training=False) is x
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, training=True), y)  # reproducible from the torch seed


@pytest.mark.parametrize("chunk", [64, 5])
def test_cpu_training_attention_path_equals_sdpa(monkeypatch, chunk):
    """With a vanishing dropout probability the CPU training path (queries in blocks of `chunk`, each block
    seeing the keys up to its last position) must compute exactly the eval path."""
    from rudolph_ft.model.rudolph import SelfAttention

    monkeypatch.setattr(SelfAttention, "query_chunk", chunk)
    config = SMALL.replace(attention_dropout_prob=1e-9, output_dropout_prob=0.0)
    model = RuDolph(config)
    shared = random_ids(config, 2)
    shared[:, :config.l_text_seq_length] = shared[:1, :config.l_text_seq_length]  # queries start after the keys
    for ids in (random_ids(config, 2), shared):
        model.train()
        train_logits = model(ids).logits
        model.eval()
        assert_close_scaled(train_logits, model(ids).logits, reduction=longest_sum(SMALL))
    ids = random_ids(config, 2)
    mask = torch.ones(2, config.total_seq_length)  # key padding mask through the same path
    mask[1, -3:] = 0
    model.train()
    train_logits = model(ids, attention_mask=mask).logits
    model.eval()
    assert_close_scaled(train_logits, model(ids, attention_mask=mask).logits, reduction=longest_sum(SMALL))


def test_dropout_extremes():
    from rudolph_ft.model.rudolph import dropout

    x = torch.randn(1000)
    assert torch.equal(dropout(x, 1e-9, training=True), x)
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros(1000))
    half = dropout(x, 0.5, training=True)
    assert 0.4 < (half == 0).float().mean() < 0.6
