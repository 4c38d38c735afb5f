"""LoRA / QLoRA adapters (`rudolph_ft.lora`): targets, exactness of fresh adapters, gradients, every role reaching
the logits (the output head included, which the model otherwise reads by weight), files, merging, NF4 error."""

import json
import math
import re

import pytest
import torch
from numerics import assert_close_scaled, longest_sum
from safetensors.torch import load_file

from rudolph_ft.config import RuDolphConfig
from rudolph_ft.lora import (
    LORA_ROLES,
    LoraSettings,
    adapter_parameters,
    apply_lora,
    base_reference,
    is_adapter_folder,
    load_adapter_model,
    merge_adapter,
    save_adapter,
    target_modules,
)
from rudolph_ft.model import RuDolph, load_model, save_model
from rudolph_ft.train.freeze import freeze_table, parameter_roles

CONFIG = RuDolphConfig.from_preset("tiny", attention_dropout_prob=0.0, output_dropout_prob=0.0)
WEIGHTS = (0.01, 1.0, 7.0)
ALL_ROLES = list(LORA_ROLES)


def base_model(seed: int = 0, config: RuDolphConfig = CONFIG) -> RuDolph:
    torch.manual_seed(seed)
    return RuDolph(config).eval()


def batch_ids(config: RuDolphConfig = CONFIG, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    left = torch.randint(1, config.vocab_size, (batch, config.l_text_seq_length), generator=generator)
    image = torch.randint(0, config.image_vocab_size, (batch, config.image_seq_length), generator=generator)
    right = torch.randint(1, config.vocab_size, (batch, config.r_text_seq_length), generator=generator)
    return torch.cat([left, image, right], dim=1)


def randomize_adapters(model: torch.nn.Module, std: float = 0.05) -> None:
    """Give every B a nonzero value (fresh adapters have B = 0 and change nothing)."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in adapter_parameters(model).items():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


@torch.no_grad()
def outputs(model: RuDolph, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Everything the heads produce: joint logits, each head's logits, the segment losses."""
    loss = model(ids, loss_weights=WEIGHTS)
    return {"joint": model(ids).logits, "text": model(ids, head="text").logits,
            "image": model(ids, head="image").logits, "loss": loss.loss, "l_text": loss.l_text_loss,
            "image_loss": loss.image_loss, "r_text": loss.r_text_loss}


def assert_outputs_close(actual: dict, expected: dict) -> None:
    for key in expected:
        assert_close_scaled(actual[key], expected[key], reduction=longest_sum(CONFIG), msg=key)


def test_roles_name_the_real_modules():
    model = base_model()
    assert target_modules(model, ["output_head"]) == ["to_logits.1"]
    attention = target_modules(model, ["attention"])
    assert len(attention) == 2 * CONFIG.num_layers and "transformer.layers.5.attention.dense" in attention
    assert "transformer.layers.0.attention.query_key_value" in attention
    assert target_modules(model, ["mlp"])[:2] == ["transformer.layers.0.mlp.dense_h_to_4h",
                                                  "transformer.layers.0.mlp.dense_4h_to_h"]
    # patterns: an exact name, a prefix, a glob
    assert target_modules(model, ["transformer.layers.1.attention.dense"]) == ["transformer.layers.1.attention.dense"]
    assert len(target_modules(model, ["transformer.layers.2"])) == 4
    assert target_modules(model, ["transformer.layers.*.mlp.dense_4h_to_h"]) == \
        [f"transformer.layers.{i}.mlp.dense_4h_to_h" for i in range(CONFIG.num_layers)]


@pytest.mark.parametrize("target", ["attn", "transformer.layers.99", "*.lm_head"])
def test_unknown_target_is_named_with_the_roles(target):
    with pytest.raises(ValueError, match=re.escape(repr(target)) + ".*attention, mlp, output_head"):
        target_modules(base_model(), ["mlp", target])


def test_fresh_adapter_leaves_every_output_unchanged():
    ids = batch_ids()
    model = base_model()
    expected = outputs(model, ids)
    model = apply_lora(model, LoraSettings(targets=ALL_ROLES))
    assert isinstance(model, RuDolph) and model.config is CONFIG  # still the model the pipelines call
    actual = outputs(model, ids)
    for key in expected:  # B = 0: the very same numbers
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("role", ALL_ROLES)
def test_nonzero_adapter_on_each_role_changes_every_output(role):
    ids = batch_ids()
    model = base_model()
    before = outputs(model, ids)
    model = apply_lora(model, LoraSettings(targets=[role]))
    randomize_adapters(model)
    after = outputs(model, ids)
    for key in before:
        assert not torch.allclose(after[key], before[key], rtol=0, atol=1e-4), f"{role} adapter missed by {key}"
    # the per-head path (rows of the output layer only) is the joint forward's columns
    text = CONFIG.text_vocab_size
    assert_close_scaled(after["text"], after["joint"][..., :text], reduction=longest_sum(CONFIG), msg="text head")
    assert_close_scaled(after["image"], after["joint"][..., text:], reduction=longest_sum(CONFIG), msg="image head")


def test_freeze_roles_cover_adapted_models():
    model = apply_lora(base_model(), LoraSettings(targets=ALL_ROLES))
    roles = parameter_roles(model)
    assert roles["to_logits.1.base_layer.weight"] == "output_head"  # the base weights keep their roles
    assert roles["transformer.layers.3.mlp.dense_4h_to_h.base_layer.weight"] == "mlp"
    # the adapters are their own group (trained in any case)
    assert roles["to_logits.1.lora_B.default.weight"] == roles[
        "transformer.layers.3.mlp.dense_4h_to_h.lora_A.default.weight"] == "adapters"
    table = freeze_table(model)
    assert "attention" in table and "adapters" in table


def test_only_adapters_and_caller_unfrozen_parameters_get_gradients():
    config = CONFIG.replace(attention_dropout_prob=0.1, output_dropout_prob=0.1)
    model = apply_lora(base_model(config=config), LoraSettings(targets=ALL_ROLES)).train()
    randomize_adapters(model)  # with B = 0, A would get no gradient
    model.to_logits[0].requires_grad_(True)  # the caller trains the output layer norm too
    model(batch_ids(), loss_weights=WEIGHTS).loss.backward()
    adapters = set(adapter_parameters(model))
    assert len(adapters) == 2 * (4 * CONFIG.num_layers + 1)
    for name, param in model.named_parameters():
        extra = name.startswith("to_logits.0.")
        assert param.requires_grad == (name in adapters or extra), name
        assert (param.grad is not None and param.grad.abs().sum() > 0) == (name in adapters or extra), name


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_saved_adapter_is_small_and_loads_back_equal(tmp_path, method):
    model = base_model()
    save_model(model, tmp_path / "base")
    model = apply_lora(model, LoraSettings(method=method, targets=ALL_ROLES, r=4))
    randomize_adapters(model)
    model.to_logits[0].requires_grad_(True)  # trained with the adapters: saved beside them
    with torch.no_grad():
        model.to_logits[0].weight.mul_(1.5)
    save_adapter(model, tmp_path / "adapter", base_reference(tmp_path / "base"))
    assert is_adapter_folder(tmp_path / "adapter") and not is_adapter_folder(tmp_path / "base")

    adapters = adapter_parameters(model)
    size = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    data = 4 * sum(p.numel() for p in adapters.values())  # float32
    assert data < size <= data + 8 + 160 * len(adapters)  # a JSON header of ~130 bytes per tensor
    assert size < (tmp_path / "base" / "model.safetensors").stat().st_size / 5
    base = json.loads((tmp_path / "adapter" / "base.json").read_text())
    assert base["base"]["path"] == str((tmp_path / "base").resolve()) and len(base["base"]["sha256"]) == 64
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4

    trained = load_file(tmp_path / "adapter" / "trained_weights.safetensors")
    assert set(trained) == {"to_logits.0.weight", "to_logits.0.bias"}

    loaded = load_adapter_model(tmp_path / "adapter")
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}
    ids = batch_ids()
    expected, actual = outputs(model, ids), outputs(loaded, ids)
    for key in expected:  # NF4 quantization is deterministic: the qlora base comes back bit for bit too
        assert torch.equal(actual[key], expected[key]), key


def test_adapter_refuses_a_missing_or_different_base(tmp_path):
    model = base_model()
    save_model(model, tmp_path / "base")
    model = apply_lora(model, LoraSettings(targets=["mlp"]))
    save_adapter(model, tmp_path / "adapter", base_reference(tmp_path / "base"))
    save_model(base_model(seed=1), tmp_path / "base")  # other weights in the same folder
    with pytest.raises(ValueError, match=r"adapter .*adapter was trained on base .*base with sha256 \w+\.\.\., but "
                                         r".*base now holds other weights \(sha256 \w+\.\.\.\)"):
        load_adapter_model(tmp_path / "adapter")
    (tmp_path / "base" / "model.safetensors").rename(tmp_path / "moved.safetensors")
    (tmp_path / "base" / "config.json").unlink()
    (tmp_path / "base").rmdir()
    with pytest.raises(FileNotFoundError, match=r"adapter .*adapter needs its base model .*base .*which is missing"):
        load_adapter_model(tmp_path / "adapter")


def test_merged_model_equals_the_adapter_model_and_saves_plain(tmp_path):
    ids = batch_ids()
    model = apply_lora(base_model(), LoraSettings(targets=ALL_ROLES))
    randomize_adapters(model)
    expected = outputs(model, ids)
    merged = merge_adapter(model)
    assert type(merged.to_logits[1]) is torch.nn.Linear and not adapter_parameters(merged)
    assert set(merged.state_dict()) == set(base_model().state_dict())
    assert_outputs_close(outputs(merged, ids), expected)
    save_model(merged, tmp_path / "merged")
    assert_outputs_close(outputs(load_model(tmp_path / "merged"), ids), expected)


def nf4_relative_error(weight: torch.Tensor) -> float:
    """Relative RMS error of a weight after an NF4 round trip (bitsandbytes' 64-value blocks)."""
    import bitsandbytes as bnb

    packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
    restored = bnb.functional.dequantize_4bit(packed, state)
    return float((restored - weight).pow(2).mean().sqrt() / weight.pow(2).mean().sqrt())


def relative_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt())


def test_qlora_error_is_nf4_quantization_error():
    """NF4 keeps each weight to a relative RMS error r_w (~0.09 for these Gaussian weights). One quantized linear
    then errs by r_w relative to its output's scale: the output head alone must show r_w in the logits. Every other
    quantized linear adds an error of at most r_w relative to the residual stream, which the layer norms carry to
    the logits' scale; independent errors add in quadrature, so k quantized linears stay under r_w * sqrt(k)."""
    import bitsandbytes as bnb

    ids = batch_ids()
    model = base_model()
    expected = model(ids).logits.detach()
    r_w = nf4_relative_error(model.to_logits[1].weight.detach())
    assert 0.05 < r_w < 0.12  # NF4's 16 levels over a block's absmax
    head = apply_lora(base_model(), LoraSettings(method="qlora", targets=["output_head"]))
    assert relative_rms(head(ids).logits.detach(), expected) == pytest.approx(r_w, rel=0.15)

    model = apply_lora(base_model(), LoraSettings(method="qlora", targets=ALL_ROLES))
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 4 * CONFIG.num_layers + 1
    logits = model(ids).logits.detach()
    assert relative_rms(logits, expected) < r_w * math.sqrt(len(quantized))
    # a fresh adapter on NF4 weights is the NF4 model; merging dequantizes: the same logits in float32
    randomize_adapters(model)
    adapted = model(ids).logits.detach()
    assert_close_scaled(merge_adapter(model)(ids).logits, adapted, reduction=longest_sum(CONFIG))


def test_qlora_training_step_runs_on_cpu():
    config = CONFIG.replace(attention_dropout_prob=0.1, output_dropout_prob=0.1)
    model = apply_lora(base_model(config=config), LoraSettings(method="qlora", targets=ALL_ROLES, quantize="all"))
    model.train()
    optimizer = torch.optim.AdamW(list(adapter_parameters(model).values()), lr=1e-2)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    ids, losses = batch_ids(), []
    for _ in range(3):
        loss = model(ids, loss_weights=WEIGHTS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    for name, param in model.named_parameters():  # the 4-bit base did not move
        if name in frozen:
            assert torch.equal(param.detach(), frozen[name]), name


def test_base_reference_names_official_presets_and_refuses_unpublished_ones():
    reference = base_reference("350M")
    assert reference["preset"] == "350M" and reference["repo_id"] == "shonenkov-AI/RuDOLPH-350M-v2"
    with pytest.raises(ValueError, match="'tiny' has no published weights"):
        base_reference("tiny")
