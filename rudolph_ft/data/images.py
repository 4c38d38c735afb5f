"""Image files to pixels: robust loading of user photos and the recipe's preprocessing (Pillow + torch, no torchvision).

`load_image` turns any file a user may have in a photo folder into an upright 8-bit RGB image, or raises an
`ImageLoadError` that names the file and says what is wrong with it. `preprocess_image` is the recipe's crop/resize.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "PREPROCESSING_ID",
    "ImageLoadError",
    "LoadedImage",
    "error_text",
    "file_sha256",
    "load_image",
    "preprocess_image",
    "read_image",
    "read_image_bytes",
    "to_rgb",
]

# Largest image decoded at full resolution: Pillow's own DecompressionBombError threshold (2 x 89.5 MP),
# i.e. about 540 MB of RGB pixels. Larger JPEGs are decoded at 1/2..1/8 scale (libjpeg's DCT scaling) instead.
MAX_IMAGE_PIXELS = 2 * 89_478_485

# Names the pixel pipeline below (`read_image(..., target_size=size)` + `preprocess_image(.., size)`), so a cache of
# image codes can key on it; bump it whenever the pixels this pipeline produces change.
PREPROCESSING_ID = "load_image-v1/draft>=2x/centre-crop-bilinear"

# What each `ImageLoadError.reason` means, for messages and reports.
LOAD_ERROR_TEXT = {
    "missing_file": "missing file",
    "unreadable_file": "unreadable file",
    "zero_byte_file": "zero-byte file",
    "truncated_image": "truncated image",
    "corrupt_image": "corrupt or unsupported image",
    "image_too_large": "image too large",
}

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_OPEN_LOCK = threading.Lock()  # guards the temporary change of Pillow's global bomb limit in `_open`
_BYTES_LITERAL = re.compile(r"""(?<!\w)b(['"])(?:\\.|(?!\1).)*\1""")  # b'...' / b"..." as repr() writes bytes
_MAX_ERROR_CHARS = 120


class ImageLoadError(Exception):
    """An image file that cannot be used, with the file, a short reason code and what to do about it.

    Attributes:
        path: the file as given.
        reason: one of `LOAD_ERROR_TEXT`'s keys (`missing_file`, `zero_byte_file`, `truncated_image`, ...).
        detail: a sentence for the user: what was found and how to fix it.
    """

    def __init__(self, path: str | Path, reason: str, detail: str):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {LOAD_ERROR_TEXT.get(reason, reason)}: {detail}")


@dataclass
class LoadedImage:
    """An image read by `read_image`: upright RGB pixels plus what the checks need to know about the file."""

    image: Image.Image  # RGB, possibly decoded at reduced scale (see `read_image`)
    sha256: str  # hex digest of the file's bytes: the stable content key
    format: str | None  # Pillow's format name ("JPEG", "PNG", ...)
    mode: str  # the file's own pixel mode before conversion ("RGB", "I;16", "CMYK", ...)
    size: tuple[int, int]  # the file's own (width, height), before EXIF rotation and reduction
    notes: list[str] = field(default_factory=list)  # harmless but noteworthy facts (16-bit, animated, ...)


def error_text(err: BaseException) -> str:
    """A library exception's text, fit for a message about a file: never the file's content.

    Decoders sometimes quote what they read (`broken PNG file (chunk b'...')`, a header token): bytes literals are
    replaced by `<bytes>`, unprintable characters dropped and the text cut to a short sentence.
    """
    text = _BYTES_LITERAL.sub("<bytes>", str(err))
    text = "".join(char for char in text if char.isprintable())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text or type(err).__name__


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (the content key of an image).

    Raises:
        ImageLoadError: the file is missing or unreadable.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise ImageLoadError(path, "missing_file", "no such file; check the image path and the images root") from None
    except OSError as err:
        raise ImageLoadError(path, "unreadable_file", f"{err.strerror or err}; check its permissions") from None
    return digest.hexdigest()


def read_image_bytes(path: str | Path) -> bytes:
    """The bytes of an image file, refusing missing, non-regular, unreadable and empty files.

    Raises:
        ImageLoadError: with reason `missing_file`, `unreadable_file` or `zero_byte_file`.
    """
    path = Path(path)
    try:
        if not path.is_file():
            if path.exists():
                raise ImageLoadError(path, "unreadable_file", "it is a directory or a special file, not an image file")
            raise ImageLoadError(path, "missing_file", "no such file; check the image path and the images root")
        data = path.read_bytes()
    except PermissionError as err:
        raise ImageLoadError(path, "unreadable_file", f"{err.strerror}; check the file's permissions") from None
    except OSError as err:
        raise ImageLoadError(path, "unreadable_file", f"{err.strerror or err}") from None
    if not data:
        raise ImageLoadError(path, "zero_byte_file", "the file is empty (0 bytes); re-export or re-download it")
    return data


def load_image(
    path: str | Path, *, target_size: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Load any image file as an upright 8-bit RGB PIL image.

    EXIF orientation is applied; palette, grey, transparent (composited on white), CMYK and 16-bit/float images
    are converted; animated files give their first frame. See `read_image` for `target_size` and `max_pixels`.

    Raises:
        ImageLoadError: the file is missing, empty, unreadable, truncated, corrupt or too large.
    """
    return read_image(path, target_size=target_size, max_pixels=max_pixels).image


def read_image(
    path: str | Path, *, target_size: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> LoadedImage:
    """Read an image file once: its content hash, upright RGB pixels and notes about it.

    Args:
        path: the image file.
        target_size: the square side the image will be resized to later. When given, big images are decoded or
            reduced to a smaller scale whose short side stays >= 2 x target_size (JPEG DCT scaling, `Image.reduce`),
            which is faster and keeps quality for the final resize. None decodes at full resolution.
        max_pixels: the largest width x height decoded at full scale. Bigger JPEGs are decoded at 1/2..1/8 scale
            to fit; other formats raise `image_too_large`. None disables the limit (Pillow's own bomb check is
            replaced by this one either way).

    Raises:
        ImageLoadError: the file is missing, empty, unreadable, truncated, corrupt or too large.
    """
    data = read_image_bytes(path)
    sha256 = hashlib.sha256(data).hexdigest()
    image = _open(data, path)
    loaded = LoadedImage(image, sha256, image.format, image.mode, image.size)
    _note_file_facts(image, path, loaded.notes)
    _decode(image, path, target_size, max_pixels)
    image = _exif_upright(image, loaded.notes)
    image = to_rgb(image, loaded.notes)
    if target_size is not None:
        factor = min(image.size) // (2 * target_size)
        if factor >= 2:  # box-filter shrink; the final bilinear resize still sees >= 2x the output size
            image = image.reduce(factor)
    loaded.image = image
    return loaded


def _open(data: bytes, path: str | Path) -> Image.Image:
    """Parse the header (no pixels yet); Pillow's bomb check is off here because `_decode` applies `max_pixels`."""
    with _OPEN_LOCK:
        saved_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        except UnidentifiedImageError:  # the message describes the file; it never quotes its bytes
            raise ImageLoadError(
                path, "corrupt_image", f"not an image format Pillow can read ({len(data):,} bytes); replace the file"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageLoadError(path, "corrupt_image", f"bad image header ({error_text(err)}); replace the file") \
                from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit


def _decode(image: Image.Image, path: str | Path, target_size: int | None, max_pixels: int | None) -> None:
    """Decode the pixels in place, at reduced JPEG scale when the image is huge or much bigger than needed."""
    width, height = image.size
    scale = 1
    for candidate in (1, 2, 4, 8):  # libjpeg decodes at 1/1, 1/2, 1/4 or 1/8 scale almost for free
        scale = candidate
        if max_pixels is None or (width // candidate) * (height // candidate) <= max_pixels:
            break
    fits = max_pixels is None or (width // scale) * (height // scale) <= max_pixels
    if image.format in ("JPEG", "MPO") and fits:
        if target_size is not None:
            while scale < 8 and min(width, height) // (scale * 2) >= 2 * target_size:
                scale *= 2
        if scale > 1:
            image.draft(None, (max(1, width // scale), max(1, height // scale)))
    elif max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            path, "image_too_large", f"{width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,}; downscale the file (e.g. to 4096 px on the long side) or raise max_pixels",
        )
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise ImageLoadError(path, "image_too_large", f"{error_text(err)}; downscale the file") from None
    except (OSError, EOFError) as err:
        truncated = isinstance(err, EOFError) or "truncat" in str(err).lower()
        reason, what = ("truncated_image", "the file ends early") if truncated else ("corrupt_image", "bad data")
        raise ImageLoadError(path, reason, f"{what} ({error_text(err)}); re-export or re-download it") from None
    except (SyntaxError, ValueError, IndexError, ZeroDivisionError, MemoryError) as err:
        raise ImageLoadError(path, "corrupt_image", f"bad data ({type(err).__name__}: {error_text(err)}); replace it") \
            from None


def _note_file_facts(image: Image.Image, path: str | Path, notes: list[str]) -> None:
    """Record facts about the file that do not stop it from loading but that a user may want to know."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"{frames} frames ({image.format}): the first frame is used")
    suffix = Path(path).suffix.lower().lstrip(".")
    expected = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP",
                "tif": "TIFF", "tiff": "TIFF"}.get(suffix)
    if expected and image.format and image.format not in (expected, "MPO"):
        notes.append(f"the extension says .{suffix} but the content is {image.format}")


def _exif_upright(image: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation tag (phones store rotated pixels plus a tag); a broken tag is noted, not fatal."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as err:  # noqa: BLE001 - any EXIF parsing failure only costs the rotation
        notes.append(f"EXIF orientation could not be read ({error_text(err)}); the image is used as stored")
        return image


def to_rgb(image: Image.Image, notes: list[str] | None = None) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB.

    Transparent pixels are composited on white; 16-bit, 32-bit and float images (depth maps, scientific data) have
    their value range stretched to 0..255 (a note says so); CMYK and palette images use Pillow's conversions.
    """
    notes = [] if notes is None else notes
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _HIGH_BIT_DEPTH_MODES:
        return _stretch_to_8bit(image, notes).convert("RGB")
    if mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageLoadError(getattr(image, "filename", "") or "<image>", "corrupt_image",
                             f"pixel mode {mode} cannot be converted to RGB ({error_text(err)}); save it as RGB") \
            from None


def _stretch_to_8bit(image: Image.Image, notes: list[str]) -> Image.Image:
    """Map a high-bit-depth single-channel image's finite value range linearly onto 0..255 (grey, mode L)."""
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    span = high - low
    scaled = np.zeros_like(values) if span <= 0 else (np.nan_to_num(values, nan=low) - low) * (255.0 / span)
    notes.append(
        f"{image.mode} image (16-bit/float, e.g. a depth map, not an ordinary photo): values {low:g}..{high:g} "
        "stretched to 8-bit grey"
    )
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def preprocess_image(image: Image.Image, size: int) -> torch.Tensor:
    """The recipe's preprocessing: RGB, centre square crop, bilinear resize, float tensor in [0, 1].

    Equals the article's `T.RandomResizedCrop(size, scale=(1., 1.), ratio=(1., 1.))` + `T.ToTensor()`
    (with scale and ratio fixed at 1 that transform always falls back to the centred largest square).

    Args:
        image: a PIL image of any mode.
        size: output side in pixels (`image_tokens_per_dim * 8` for RuDOLPH).

    Returns:
        (3, size, size) float32 tensor in [0, 1].
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
