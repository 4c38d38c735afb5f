"""Model + tokenizer + VQGAN bundles: model directories, run directories, official names."""

import pytest
import torch

from rudolph_ft.components import Components, load_components, save_components
from rudolph_ft.hub import WeightsNotFoundError, resolve_model_dir
from rudolph_ft.model import load_model
from rudolph_ft.model.vqgan import load_vqgan
from rudolph_ft.tokenizer import train_tokenizer

CAPTIONS = [f"блюдо: {d}; белков: {p}; ккал: {k};" for d in ("борщ", "паста", "плов") for p, k in ((3, 120), (7, 300))]


@pytest.fixture
def components():
    return Components(model=load_model("demo", pretrained=False), tokenizer=train_tokenizer(CAPTIONS, 60),
                      vqgan=load_vqgan("tiny"))


def test_saved_bundle_loads_back_whole(components, tmp_path):
    save_components(components, tmp_path / "m")
    loaded = load_components(tmp_path / "m")
    ids = torch.zeros(1, components.model.config.total_seq_length, dtype=torch.long)
    torch.testing.assert_close(loaded.model(ids).logits, components.model(ids).logits, atol=0, rtol=0)
    assert loaded.tokenizer.encode(CAPTIONS[0]) == components.tokenizer.encode(CAPTIONS[0])
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded.vqgan.encode(images), components.vqgan.encode(images))


def test_official_names_are_resolved_offline_with_a_clear_error(components, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_components(components, tmp_path / "m", tokenizer_name="rudalle", vqgan_name="tiny")
    assert not (tmp_path / "m" / "bpe.model").exists()
    with pytest.raises(WeightsNotFoundError, match="shonenkov/rudalle-utils"):
        load_components(tmp_path / "m", cache_dir=tmp_path / "cache")
    # an explicit tokenizer overrides the name the directory records
    loaded = load_components(tmp_path / "m", tokenizer=components.tokenizer.save(tmp_path / "bpe.model"))
    assert loaded.vqgan.config.name == "tiny"


def test_run_directory_resolves_to_final_else_newest_checkpoint(components, tmp_path):
    run = tmp_path / "run"
    for step in (2, 10):
        save_components(components, run / "checkpoints" / f"step-{step}")
    assert resolve_model_dir(run) == run / "checkpoints" / "step-10"
    assert isinstance(load_components(run).model, torch.nn.Module)
    save_components(components, run / "final")
    assert resolve_model_dir(run) == run / "final"
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        resolve_model_dir(tmp_path / "empty")
