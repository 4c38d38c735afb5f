"""Freezing by module role, name patterns and the article's own rule."""

import pytest
import torch

from rudolph_ft.config import MODEL_PRESETS
from rudolph_ft.model import RuDolph
from rudolph_ft.train.freeze import ROLES, FreezeConfig, apply_freeze, freeze_table, parameter_roles


@pytest.fixture(scope="module")
def model():
    return RuDolph(MODEL_PRESETS["tiny"])


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_every_parameter_has_one_role(model):
    roles = parameter_roles(model)
    assert set(roles) == {n for n, _ in model.named_parameters()}
    assert set(roles.values()) == set(ROLES)
    assert roles["transformer.layers.0.attention.query_key_value.weight"] == "attention"
    assert roles["transformer.layers.5.before_second_addition_layernorm.bias"] == "layer_norms"
    assert roles["to_logits.0.weight"] == "layer_norms" and roles["to_logits.1.weight"] == "output_head"
    assert roles["image_row_embeddings.weight"] == "position_embeddings"


def test_default_freezes_attention_and_mlp(model):
    apply_freeze(model, FreezeConfig())
    names = trainable_names(model)
    assert not any(".attention." in n or ".mlp." in n for n in names)
    assert "text_embeddings.weight" in names and "to_logits.1.bias" in names
    assert "transformer.final_layernorm.weight" in names


def test_unfreeze_and_freeze_prefixes(model):
    apply_freeze(model, FreezeConfig(unfreeze="transformer.layers.5|to_logits", freeze="image_embeddings"))
    names = trainable_names(model)
    assert "transformer.layers.5.attention.dense.weight" in names
    assert "transformer.layers.4.attention.dense.weight" not in names
    assert "image_embeddings.weight" not in names
    with pytest.raises(ValueError, match="match no parameter"):
        apply_freeze(model, FreezeConfig(unfreeze="transformer.layer.5"))
    with pytest.raises(ValueError, match="unknown role"):
        FreezeConfig(train=["attn"])


def test_article_rule_freezes_only_mlps_on_350m():
    """RECIPE §1: on the 350M config the article's rule leaves 153,189,184 of 354,638,656 parameters trainable."""
    with torch.device("meta"):
        big = RuDolph(MODEL_PRESETS["350M"])
    apply_freeze(big, FreezeConfig(mode="article"))
    trainable = sum(p.numel() for p in big.parameters() if p.requires_grad)
    assert trainable == 153_189_184
    assert all(p.requires_grad for n, p in big.named_parameters() if ".attention." in n)
    table = freeze_table(big)
    assert "153,189,184" in table and "attention" in table
