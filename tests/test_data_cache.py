"""The image-code cache: codes equal the VQGAN's own, keyed by content + VQGAN + preprocessing + view; robust files.

Codes computed in another batching than the cache's (the direct `VQGAN.encode`, a rebuild with another batch size)
come from logits that differ by rounding (~5e-6), so they are compared with `assert_tokens_match`: equal except at
near-ties. Codes that are the same computation twice (read back from the cache, one grid copied to duplicate items,
re-encoding in single-image batches) are compared exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from numerics import assert_tokens_match, gumbel_margins, top2_margins
from PIL import Image

import rudolph_ft.data.cache as cache_module
from rudolph_ft.data import CodeCache, FoodDataset, default_cache_dir, file_sha256, gumbel_seed, vqgan_identity
from rudolph_ft.model.vqgan import load_vqgan

DEMO_IMAGES = Path(__file__).parents[1] / "data" / "demo" / "images"
SIZE = 64  # the tiny VQGAN's resolution: 8 x 8 codes
HEADER = "index,belok,fats,uglevod,kkal,name,path\n"


def _draw(path: Path, seed: int, size: tuple[int, int] = (80, 64)) -> None:
    """A smooth random colour image (content the VQGAN tells apart), saved as PNG."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize(size, Image.BILINEAR).save(path)


def _write_table(folder: Path, images: list[str]) -> Path:
    rows = [f"{i},1.5,2.5,3.5,{100 + i},блюдо {i},{name}\n" for i, name in enumerate(images)]
    (folder / "data.csv").write_text(HEADER + "".join(rows), encoding="utf-8")
    return folder


@pytest.fixture
def photos(tmp_path) -> Path:
    """An article-format dataset folder: 4 generated PNGs and 2 demo JPEGs."""
    folder = tmp_path / "photos"
    (folder / "img").mkdir(parents=True)
    names = []
    for seed in range(4):
        _draw(folder / "img" / f"gen{seed}.png", seed)
        names.append(f"img/gen{seed}.png")
    for demo in sorted(DEMO_IMAGES.glob("*.jpg"))[:2]:
        shutil.copy(demo, folder / "img" / demo.name)
        names.append(f"img/{demo.name}")
    return _write_table(folder, names)


@pytest.fixture(scope="module")
def vqgan():
    return load_vqgan("tiny")


def _dataset(folder: Path, image_size: int = SIZE, **overrides) -> FoodDataset:
    return FoodDataset(folder, image_size=image_size, **overrides)


def _pixels(dataset: FoodDataset) -> torch.Tensor:
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])  # (N, 3, S, S)


def _direct_codes(dataset: FoodDataset, vqgan) -> torch.Tensor:
    """(N, h*w) argmax codes by the independent route: the dataset's preprocessed pixels through `VQGAN.encode`."""
    return vqgan.encode(_pixels(dataset))


@torch.no_grad()
def _margins(dataset: FoodDataset, vqgan, *, views: int = 1, temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(N, views, h*w) margins of the decisions behind a cache's codes: view 0's top-2 logit gaps, each Gumbel view's
    top-2 gaps of logits / temperature + the noise its `gumbel_seed` generator draws. From the logits of one batch of
    all images: another batching moves them by ~5e-6, far under `NEAR_TIE`."""
    logits = vqgan.encode_logits(_pixels(dataset))  # (N, n_embed, h, w)
    grids = [top2_margins(logits, dim=1).flatten(1)]
    for view in range(1, views):
        generators = [torch.Generator().manual_seed(gumbel_seed(dataset.describe(i)["image_sha256"], view, seed))
                      for i in range(len(dataset))]
        grids.append(torch.cat([gumbel_margins(one, generator, temperature)
                                for one, generator in zip(logits.split(1), generators, strict=True)]))
    return torch.stack(grids, dim=1)


def _assert_codes_match(ours: torch.Tensor, expected: torch.Tensor, margins: torch.Tensor, what: str) -> None:
    """Equal codes, except where the decision was a near-tie that another batching may flip."""
    assert_tokens_match(ours, expected, margins, sequential=False, what=what)


def test_codes_equal_direct_encoding_and_second_run_hits(photos, vqgan, tmp_path):
    dataset = _dataset(photos)
    cache = CodeCache(tmp_path / "codes", vqgan, image_size=SIZE, batch_size=4)
    codes = cache.codes_for(dataset, progress=False)
    assert codes.shape == (6, 1, 64) and codes.dtype == torch.long
    _assert_codes_match(codes[:, 0], _direct_codes(dataset, vqgan), _margins(dataset, vqgan)[:, 0], "cached codes")
    assert (cache.stats.items, cache.stats.hits, cache.stats.misses, cache.stats.encoded) == (6, 0, 6, 6)
    assert cache.stats.written == 6 and cache.stats.corrupt == 0

    again = CodeCache(tmp_path / "codes", load_vqgan("tiny"), image_size=SIZE)  # another run: new objects
    assert torch.equal(again.codes_for(dataset, progress=False), codes)  # read back: the stored codes
    assert (again.stats.hits, again.stats.misses, again.stats.written) == (6, 0, 0)
    assert "6 read from the code cache, 0 encoded" in str(again.stats)


def test_edited_image_is_reencoded_and_renamed_copy_hits(photos, vqgan, tmp_path):
    directory = tmp_path / "codes"
    before = CodeCache(directory, vqgan, image_size=SIZE).codes_for(_dataset(photos), progress=False)

    _draw(photos / "img" / "gen1.png", seed=99)  # new content under the old name
    (photos / "img" / "gen2.png").rename(photos / "img" / "moved.png")  # same content under a new name
    _write_table(photos, ["img/gen0.png", "img/gen1.png", "img/moved.png"] +
                 [f"img/{p.name}" for p in sorted(DEMO_IMAGES.glob("*.jpg"))[:2]])
    edited = _dataset(photos)
    cache = CodeCache(directory, vqgan, image_size=SIZE)
    after = cache.codes_for(edited, progress=False)
    assert (cache.stats.hits, cache.stats.misses) == (4, 1)
    _assert_codes_match(after[:, 0], _direct_codes(edited, vqgan), _margins(edited, vqgan)[:, 0], "edited codes")
    assert not torch.equal(after[1], before[1])
    assert torch.equal(after[[0, 2, 3, 4]], before[[0, 2, 4, 5]])  # hits: the stored codes


def test_another_vqgan_or_size_or_changed_weights_misses(photos, vqgan, tmp_path):
    dataset = _dataset(photos)
    CodeCache(tmp_path, vqgan, image_size=SIZE).codes_for(dataset, progress=False)

    other = CodeCache(tmp_path, load_vqgan("tiny", seed=1), image_size=SIZE)
    other.codes_for(dataset, progress=False)
    assert (other.stats.hits, other.stats.misses) == (0, 6)
    assert other.setting_dir() != CodeCache(tmp_path, vqgan, image_size=SIZE).setting_dir()

    tuned = load_vqgan("tiny")
    identity = vqgan_identity(tuned)
    with torch.no_grad():
        tuned.decoder.conv_in.weight.add_(1.0)  # the decoder does not change codes
    assert vqgan_identity(tuned) == identity
    with torch.no_grad():
        tuned.encoder.conv_in.bias.add_(1e-3)  # an in-place encoder update does
    assert vqgan_identity(tuned) != identity

    larger = _dataset(photos, image_size=2 * SIZE)
    with pytest.raises(ValueError, match=f"yields {2 * SIZE} px images but this code cache encodes {SIZE} px"):
        CodeCache(tmp_path, vqgan, image_size=SIZE).codes_for(larger, progress=False)


def test_views_are_reproducible_and_view0_is_argmax(photos, vqgan, tmp_path):
    dataset = _dataset(photos)
    cache = CodeCache(tmp_path / "a", vqgan, image_size=SIZE, views=3, temperature=0.7, seed=5, batch_size=4)
    codes = cache.codes_for(dataset, progress=False)
    assert codes.shape == (6, 3, 64) and cache.stats.written == 18
    margins = _margins(dataset, vqgan, views=3, temperature=0.7, seed=5)
    _assert_codes_match(codes[:, 0], _direct_codes(dataset, vqgan), margins[:, 0], "view 0 codes")
    for index in (0, 5):
        item = dataset[index]
        for view in (1, 2):
            generator = torch.Generator().manual_seed(gumbel_seed(item["image_sha256"], view, 5))
            sampled = vqgan.encode(item["image"][None], gumbel=True, temperature=0.7, generator=generator)
            _assert_codes_match(codes[index, view][None], sampled, margins[index, view][None], f"view {view} codes")
    assert not torch.equal(codes[:, 1], codes[:, 0]) and not torch.equal(codes[:, 1], codes[:, 2])

    rebuilt = CodeCache(tmp_path / "b", vqgan, image_size=SIZE, views=3, temperature=0.7, seed=5, batch_size=6)
    _assert_codes_match(rebuilt.codes_for(dataset, progress=False), codes, margins, "rebuilt codes")  # other batches

    argmax_only = CodeCache(tmp_path / "a", vqgan, image_size=SIZE)  # shares the view-0 entries
    assert torch.equal(argmax_only.codes_for(dataset, progress=False)[:, 0], codes[:, 0])  # read back
    assert argmax_only.stats.hits == 6
    reseeded = CodeCache(tmp_path / "a", vqgan, image_size=SIZE, views=2, temperature=0.7, seed=6)
    other = reseeded.codes_for(dataset, progress=False)
    assert reseeded.stats.misses == 6  # re-encoded, in one batch of 6
    _assert_codes_match(other[:, 0], codes[:, 0], margins[:, 0], "reseeded view 0 codes")
    assert not torch.equal(other[:, 1], codes[:, 1])


def test_corrupt_entries_are_reencoded(photos, vqgan, tmp_path):
    dataset = _dataset(photos)
    # single-image batches: the entries re-encoded below are the same computation as the first encoding, bitwise
    cache = CodeCache(tmp_path, vqgan, image_size=SIZE, batch_size=1)
    codes = cache.codes_for(dataset, progress=False)
    paths = [cache.entry_path(dataset.describe(i)["image_sha256"]) for i in range(4)]
    paths[0].write_bytes(paths[0].read_bytes()[:30])  # truncated
    damaged = bytearray(paths[1].read_bytes())
    damaged[60] ^= 0xFF  # flipped bits in the codes (the header is 44 bytes)
    paths[1].write_bytes(bytes(damaged))
    paths[2].write_bytes(b"\x00" * 200)  # garbage
    shutil.copy(cache.entry_path(dataset.describe(5)["image_sha256"]), paths[3])  # another image's valid entry
    assert torch.equal(cache.codes_for(dataset, progress=False), codes)
    assert (cache.stats.corrupt, cache.stats.misses, cache.stats.written) == (4, 4, 4)
    cache.codes_for(dataset, progress=False)
    assert (cache.stats.hits, cache.stats.corrupt) == (6, 0)


def test_writes_are_atomic_and_an_interrupted_write_leaves_nothing(photos, vqgan, tmp_path, monkeypatch):
    dataset = _dataset(photos)
    real_writer = cache_module._bytes_writer

    def dying_writer(data: bytes):
        def write(tmp: str) -> None:
            Path(tmp).write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt  # killed mid-write

        return write if data.startswith(b"RFTC") else real_writer(data)

    monkeypatch.setattr(cache_module, "_bytes_writer", dying_writer)
    with pytest.raises(KeyboardInterrupt):
        CodeCache(tmp_path, vqgan, image_size=SIZE).codes_for(dataset, progress=False)
    assert not list(tmp_path.rglob("*.codes")) and not list(tmp_path.rglob("*.tmp"))

    monkeypatch.setattr(cache_module, "_bytes_writer", real_writer)
    cache = CodeCache(tmp_path, vqgan, image_size=SIZE, views=2)
    cache.codes_for(dataset, progress=False)
    assert len(list(tmp_path.rglob("*.codes"))) == 12 and not list(tmp_path.rglob("*.tmp"))
    assert (cache.setting_dir() / "settings.json").read_text().count(vqgan_identity(vqgan)) == 1


def test_duplicate_images_are_encoded_once(photos, vqgan, tmp_path):
    shutil.copy(photos / "img" / "gen0.png", photos / "img" / "copy.png")
    _write_table(photos, ["img/gen0.png", "img/gen1.png", "img/copy.png"])
    dataset = _dataset(photos, drop_duplicates=False)
    cache = CodeCache(tmp_path, vqgan, image_size=SIZE)
    codes = cache.codes_for(dataset, progress=False)
    assert (cache.stats.misses, cache.stats.encoded, cache.stats.written) == (3, 2, 2)
    assert torch.equal(codes[0], codes[2])  # one grid, encoded once, for both items
    assert dataset.describe(0)["image_sha256"] == file_sha256(photos / "img" / "copy.png")


def test_unwritable_cache_warns_and_still_returns_codes(photos, vqgan, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    dataset = _dataset(photos)
    cache = CodeCache(blocker, vqgan, image_size=SIZE)
    with pytest.warns(UserWarning, match="cannot write to the image-code cache .*RUDOLPH_FT_CACHE"):
        codes = cache.codes_for(dataset, progress=False)
    _assert_codes_match(codes[:, 0], _direct_codes(dataset, vqgan), _margins(dataset, vqgan)[:, 0], "unwritten codes")
    assert cache.stats.written == 0


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RUDOLPH_FT_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "codes"
    monkeypatch.delenv("RUDOLPH_FT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rudolph-ft" / "codes"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "rudolph-ft" / "codes"


def test_bad_arguments_are_refused(vqgan, tmp_path):
    with pytest.raises(ValueError, match="views must be >= 1"):
        CodeCache(tmp_path, vqgan, image_size=SIZE, views=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        CodeCache(tmp_path, vqgan, image_size=SIZE, temperature=0.0)
    with pytest.raises(ValueError, match="not a multiple of the downsampling 8"):
        CodeCache(tmp_path, vqgan, image_size=60)
