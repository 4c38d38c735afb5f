"""Image loading: real Nutrition5k photos, every pixel mode a photo folder may hold, and broken files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from numerics import assert_close_scaled
from PIL import Image

from rudolph_ft.data.images import (
    ImageLoadError,
    file_sha256,
    load_image,
    preprocess_image,
    read_image,
)

N5K = Path(__file__).parent / "assets" / "data" / "nutrition5k"


def _rgb(image: Image.Image, x: int = 0, y: int = 0) -> tuple[int, int, int]:
    return tuple(int(v) for v in image.getpixel((x, y)))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but that carries almost no data (a 'decompression bomb' shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ---- real photos ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dish_1550704750/camera_A_frame_001.jpeg", "dish_1559845399/rgb.png"])
def test_real_photos_load_as_rgb(name):
    loaded = read_image(N5K / name)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == loaded.size
    assert loaded.notes == []
    assert loaded.sha256 == file_sha256(N5K / name)
    assert 20 < np.asarray(loaded.image).mean() < 235


def test_16bit_depth_map_is_stretched_to_8bit_and_noted():
    loaded = read_image(N5K / "dish_1559845399/depth_raw.png")
    assert loaded.mode == "I;16"
    pixels = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
    assert (pixels[..., 0] == pixels[..., 2]).all()  # grey
    assert any("depth map" in note and "0..4864" in note for note in loaded.notes)


def test_preprocess_keeps_the_recipe_behaviour():
    image = load_image(N5K / "dish_1559845399/rgb.png")  # 640x480: the centred 480x480 square is used
    tensor = preprocess_image(image, 64)
    assert tensor.shape == (3, 64, 64) and str(tensor.dtype) == "torch.float32"
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    square = image.crop((80, 0, 560, 480)).resize((64, 64), Image.BILINEAR)
    expected = np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 255.0
    assert_close_scaled(tensor, expected, reduction=1)  # one rounding: uint8 / 255


# ---- pixel modes ----------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.size == (20, 40)
    top, bottom = _rgb(loaded, 10, 5), _rgb(loaded, 10, 35)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.save(tmp_path / "palette.png", transparency=1)
    loaded = load_image(tmp_path / "palette.png")
    assert _rgb(loaded, 0, 0) == (255, 255, 255)
    assert _rgb(loaded, 7, 0) == (255, 0, 0)


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [("LA", (0, 0), (255, 255, 255)), ("LA", (0, 255), (0, 0, 0)), ("RGBA", (255, 0, 0, 128), (255, 127, 127))],
)
def test_transparent_modes_are_composited_on_white(tmp_path, mode, colour, expected):
    Image.new(mode, (4, 4), colour).save(tmp_path / "alpha.png")
    assert all(abs(a - b) <= 1 for a, b in zip(_rgb(load_image(tmp_path / "alpha.png")), expected, strict=True))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    loaded = read_image(tmp_path / "cmyk.jpg")
    assert loaded.mode == "CMYK" and loaded.image.mode == "RGB"
    red, green, blue = _rgb(loaded.image, 8, 8)
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", "png"), ("I", "tif"), ("F", "tif")])
def test_high_bit_depth_modes_are_stretched(tmp_path, mode, suffix):
    ramp = np.linspace(1000, 5000, 64 * 8).reshape(8, 64)
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    Image.fromarray(ramp.astype(dtype)).save(tmp_path / f"deep.{suffix}")
    loaded = read_image(tmp_path / f"deep.{suffix}")
    pixels = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
    assert np.all(np.diff(pixels[0, :, 0].astype(int)) >= 0)  # the ramp stays a ramp
    assert loaded.notes and "stretched" in loaded.notes[0]


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = read_image(tmp_path / "anim.gif")
    red, green, blue = _rgb(loaded.image)
    assert red > 200 and green < 50 and blue < 50
    assert "3 frames" in loaded.notes[0]


def test_wrong_extension_loads_and_is_noted(tmp_path):
    Image.new("RGB", (8, 8), (0, 128, 0)).save(tmp_path / "photo.jpg", format="PNG")
    loaded = read_image(tmp_path / "photo.jpg")
    assert _rgb(loaded.image) == (0, 128, 0)
    assert any(".jpg but the content is PNG" in note for note in loaded.notes)


# ---- big images -----------------------------------------------------------------------------------------------


def test_huge_jpeg_is_decoded_at_reduced_scale(tmp_path):
    Image.new("RGB", (3000, 2000), (200, 100, 50)).save(tmp_path / "big.jpg", quality=70)
    loaded = read_image(tmp_path / "big.jpg", max_pixels=1_000_000)
    assert loaded.size == (3000, 2000)
    assert loaded.image.size == (750, 500)  # 1/2 scale would still be 1.5 MP; libjpeg decodes at 1/4


def test_target_size_decodes_just_big_enough(tmp_path):
    Image.new("RGB", (2048, 1536), (10, 20, 30)).save(tmp_path / "big.jpg", quality=70)
    assert load_image(tmp_path / "big.jpg", target_size=128).size == (512, 384)  # short side >= 2 x 128
    Image.new("RGB", (2048, 1536), (10, 20, 30)).save(tmp_path / "big.png")
    assert min(load_image(tmp_path / "big.png", target_size=128).size) >= 256


def test_too_large_non_jpeg_is_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 50_000, 50_000)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert caught.value.reason == "image_too_large"
    assert "2,500,000,000 pixels" in str(caught.value) and "bomb.png" in str(caught.value)


def test_pillow_bomb_limit_is_replaced_by_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would raise DecompressionBombError
    Image.new("RGB", (160, 160), (1, 2, 3)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").size == (160, 160)
    assert Image.MAX_IMAGE_PIXELS == 100


# ---- broken files ---------------------------------------------------------------------------------------------


def _broken(tmp_path: Path, kind: str) -> Path:
    photo = (N5K / "dish_1550704750/camera_A_frame_001.jpeg").read_bytes()
    path = tmp_path / {"directory": "folder.jpg", "text": "notes.png"}.get(kind, f"{kind}.jpg")
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(photo[: len(photo) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("not an image\n")
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "reason", "words"),
    [
        ("missing", "missing_file", "no such file"),
        ("zero", "zero_byte_file", "0 bytes"),
        ("truncated", "truncated_image", "ends early"),
        ("random", "corrupt_image", "not an image format"),
        ("text", "corrupt_image", "not an image format"),
        ("directory", "unreadable_file", "directory"),
    ],
)
def test_broken_files_raise_a_clear_error(tmp_path, kind, reason, words):
    path = _broken(tmp_path, kind)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert caught.value.reason == reason
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_truncated_png_is_reported(tmp_path):
    data = (N5K / "dish_1559845399/rgb.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageLoadError) as caught:
        load_image(tmp_path / "cut.png")
    assert caught.value.reason in ("truncated_image", "corrupt_image")
