"""The palette image tokenizer: codes are the nearest colour patterns of 8x8 patches, fitted by k-means."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rudolph_ft.config import PaletteConfig
from rudolph_ft.model.palette import PaletteTokenizer, kmeans
from rudolph_ft.model.vqgan import VQGANLoadError, load_vqgan, save_vqgan
from rudolph_ft.train.prepare import fit_kmeans_quantizer


def _brute_force_codes(tokenizer: PaletteTokenizer, images: torch.Tensor) -> np.ndarray:
    """Codes by a plain loop: each 8x8 patch's four 4x4 sub-square mean colours, nearest centroid in numpy."""
    pixels, centroids = images.numpy().astype(np.float64), tokenizer.centroids.numpy().astype(np.float64)
    side = pixels.shape[-1] // 8
    codes = np.zeros((len(pixels), side * side), dtype=np.int64)
    for b in range(len(pixels)):
        for row in range(side):
            for col in range(side):
                patch = pixels[b, :, row * 8:row * 8 + 8, col * 8:col * 8 + 8]
                feature = np.array([patch[c, i * 4:i * 4 + 4, j * 4:j * 4 + 4].mean()
                                    for c in range(3) for i in range(2) for j in range(2)])
                codes[b, row * side + col] = np.argmin(((centroids - feature) ** 2).sum(1))
    return codes


def test_codes_are_the_nearest_colour_pattern_of_each_patch():
    torch.manual_seed(0)
    tokenizer = load_vqgan("palette")
    images = torch.rand(2, 3, 32, 32)
    fit_kmeans_quantizer(tokenizer, torch.rand(6, 3, 32, 32), iterations=3)
    codes = tokenizer.encode(images)
    assert codes.shape == (2, 16) and codes.dtype == torch.int64
    assert np.array_equal(codes.numpy(), _brute_force_codes(tokenizer, images))
    assert torch.equal(tokenizer.encode_logits(images).argmax(1).flatten(1), codes)


def test_unfitted_palette_is_plain_colours_spread_over_the_cube():
    tokenizer = PaletteTokenizer(PaletteConfig(n_embed=512))
    colours = tokenizer.centroids.reshape(512, 3, 4)
    assert torch.equal(colours, colours[:, :, :1].expand(-1, -1, 4))  # every sub-square alike
    assert colours[:, :, 0].unique(dim=0).shape[0] == 512  # 8 levels per channel, all distinct
    black = tokenizer.encode(torch.zeros(1, 3, 16, 16))
    assert torch.allclose(tokenizer.decode(black), torch.full((1, 3, 16, 16), 1 / 16))  # the darkest level's centre


def test_fit_recovers_a_photo_made_of_few_patterns_and_decode_paints_it_back():
    """Photos tiled from 5 two-by-two colour patterns: the fitted palette holds them, so decode(encode(x)) == x."""
    generator = torch.Generator().manual_seed(1)
    patterns = torch.rand(5, 3, 2, 2, generator=generator)
    layout = torch.randint(5, (4, 6, 6), generator=generator)
    cells = patterns[layout]  # (4, 6, 6, 3, 2, 2)
    images = cells.permute(0, 3, 1, 4, 2, 5).reshape(4, 3, 12, 12).repeat_interleave(4, 2).repeat_interleave(4, 3)
    tokenizer = PaletteTokenizer(PaletteConfig(n_embed=8))
    tokenizer.fit(images, iterations=10, seed=0)
    codes = tokenizer.encode(images)
    assert codes.unique().numel() == 5
    assert torch.allclose(tokenizer.decode(codes), images, atol=1e-6)


def test_kmeans_with_fewer_points_than_centroids_keeps_every_point():
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    centroids = kmeans(points, 5, iterations=3, seed=0)
    assert centroids.shape == (5, 2)
    assert {tuple(p) for p in centroids.tolist()} == {tuple(p) for p in points.tolist()}


def test_save_and_load_a_fitted_palette(tmp_path):
    tokenizer = load_vqgan("palette")
    photos = torch.rand(3, 3, 64, 64)
    tokenizer.fit(photos, iterations=2)
    save_vqgan(tokenizer, tmp_path / "palette")
    assert json.loads((tmp_path / "palette" / "config.json").read_text())["kind"] == "palette"
    loaded = load_vqgan(tmp_path / "palette")
    assert isinstance(loaded, PaletteTokenizer) and torch.equal(loaded.encode(photos), tokenizer.encode(photos))

    small = PaletteTokenizer(PaletteConfig(n_embed=4))
    save_vqgan(small, tmp_path / "small")
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    (tmp_path / "small" / "config.json").write_text(json.dumps({**config, "n_embed": 8}))
    with pytest.raises(VQGANLoadError, match=r"no palette of \(8, 12\) centroids"):
        load_vqgan(tmp_path / "small")


def test_gumbel_codes_and_bad_images_are_clear_errors():
    tokenizer = load_vqgan("palette")
    with pytest.raises(ValueError, match="no Gumbel codes"):
        tokenizer.encode(torch.rand(1, 3, 16, 16), gumbel=True)
    with pytest.raises(ValueError, match="not a multiple of the downsampling 8"):
        tokenizer.encode(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        tokenizer.encode(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="multiple of cells"):
        PaletteConfig(cells=3)


def test_image_embeddings_start_from_the_palette_colours():
    """model.image_embeddings=tokenizer: an orthonormal map of the standardised colours plus a little noise, so
    embedding distances follow colour distances; the special image tokens keep their random start."""
    from rudolph_ft.model import load_model
    from rudolph_ft.train.prepare import init_image_embeddings

    model = load_model("demo", pretrained=False, hidden_size=64, num_layers=1, num_attention_heads=2)
    tokenizer = load_vqgan("palette")
    tokenizer.fit(torch.rand(4, 3, 64, 64), iterations=2)
    before = model.image_embeddings.weight.clone()
    init_image_embeddings(model, tokenizer, seed=0)
    rows = model.image_embeddings.weight[: tokenizer.num_codes]
    features = tokenizer.centroid_features()
    pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:100]
    embedded, coloured = torch.pdist(rows[pick]), torch.pdist(features[pick])
    assert torch.corrcoef(torch.stack([embedded, coloured]))[0, 1] > 0.9
    assert 0.015 < rows.std().item() < 0.03  # the usual init scale
    assert torch.equal(model.image_embeddings.weight[tokenizer.num_codes:], before[tokenizer.num_codes:])
    with pytest.raises(ValueError, match="vqgan.name=palette"):
        init_image_embeddings(model, load_vqgan("tiny", seed=0))


def test_a_palette_run_trains_saves_its_fitted_palette_and_captions_from_the_cli(tmp_path):
    """The settings the demo config uses, on 40 demo photos: the run's final model folder holds the palette fitted
    to the training photos, and `rudolph-ft caption` reads it back."""
    from test_train import tiny_config
    from typer.testing import CliRunner

    from rudolph_ft.cli import app
    from rudolph_ft.train.loop import Trainer
    from rudolph_ft.train.prepare import run_dataset

    data = _copy_demo_rows(tmp_path / "data", 40)
    config = tiny_config(data, tmp_path / "run", "vqgan.name=palette", "vqgan.fit=kmeans", "vqgan.augment=shift",
                         "vqgan.views=2", "model.image_embeddings=tokenizer", "train.epochs=1")
    Trainer(config, echo=lambda m: None).run()
    saved = load_vqgan(tmp_path / "run" / "final" / "vqgan")
    expected = PaletteTokenizer(PaletteConfig(name="palette"))
    train, _ = run_dataset(config.data, 64).split()
    expected.fit(torch.stack([train[i]["image"] for i in range(len(train))]), seed=config.train.seed, batch_size=50)
    assert isinstance(saved, PaletteTokenizer) and torch.equal(saved.centroids, expected.centroids)

    photo = sorted((data / "images").glob("*.jpg"))[0]
    result = CliRunner().invoke(app, ["caption", str(photo), "--model", str(tmp_path / "run"), "-n", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(photo) and len(lines) == 3 and all("блюдо:" in line for line in lines[1:])


def test_palette_run_settings_that_cannot_work_are_clear_errors(tmp_path):
    from test_train import tiny_config

    from rudolph_ft.train.loop import Trainer

    data = _copy_demo_rows(tmp_path / "data", 40)
    with pytest.raises(ValueError, match="tokenizer has none to sample: use vqgan.augment=shift"):
        Trainer(tiny_config(data, tmp_path / "a", "vqgan.name=palette"), echo=lambda m: None).run()
    with pytest.raises(ValueError, match="needs a tokenizer with code features"):
        Trainer(tiny_config(data, tmp_path / "b", "model.image_embeddings=tokenizer", "vqgan.augment=dihedral"),
                echo=lambda m: None).run()


def _copy_demo_rows(out, rows: int):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data" / "demo"
    out.mkdir(parents=True)
    lines = (root / "data.csv").read_text(encoding="utf-8").splitlines()
    (out / "data.csv").write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    shutil.copytree(root / "images", out / "images")
    return out
