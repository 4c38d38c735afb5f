"""The image-code cache: encode each image once with the VQGAN, keep the codes on disk, read them in later epochs/runs.

An entry is keyed by everything that decides an image's codes, and by nothing else (not the file name):
- the image's content, the sha256 of its file bytes: an edited image is re-encoded, a renamed or moved copy is a hit;
- the VQGAN's identity (`vqgan_identity`): its architecture and a hash of the weights `encode` uses, so another seed,
  a fine-tuned encoder or bf16 weights make another VQGAN (the decoder does not change codes and is not hashed);
- the preprocessing: `PREPROCESSING_ID` and the image size;
- the view: view 0 holds the argmax codes, views 1..K-1 Gumbel-sampled codes (augmentation) drawn with a seed made
  from (image hash, view index, seed) at a temperature, so every entry is reproducible.

Layout: one small file per (setting, image, view) under a cache folder, by default `~/.cache/rudolph-ft/codes`
(`$RUDOLPH_FT_CACHE/codes` when that environment variable is set, else `$XDG_CACHE_HOME/rudolph-ft/codes`):

    <folder>/<setting key>/settings.json                      what the setting is (VQGAN, preprocessing), for people
    <folder>/<setting key>/<sha[:2]>/<sha>.<view tag>.codes   header + uint16 codes + checksum (~0.6 KB at 128 px)

Entries are written atomically (temporary file + rename), so concurrent runs and killed runs never leave a half-written
entry; one that fails its checks anyway (truncated, overwritten, bit rot) is re-encoded and rewritten, not a crash.
Deleting the folder, or any part of it, is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..io import atomic_write
from ..model.vqgan import gumbel_max_codes
from .datasets import collate_images
from .images import PREPROCESSING_ID

if TYPE_CHECKING:
    from ..model.vqgan import VQGAN

__all__ = [
    "CACHE_ENV",
    "CacheStats",
    "CodeCache",
    "default_cache_dir",
    "gumbel_seed",
    "vqgan_identity",
]

logger = logging.getLogger(__name__)

#: Environment variable naming rudolph-ft's cache root; image codes go to its `codes/` subfolder.
CACHE_ENV = "RUDOLPH_FT_CACHE"

#: Version of the entry format and of the meaning of the codes; bump it when either changes (e.g. the numerics of
#: `VQGAN.encode`), which moves every setting to a new key, i.e. starts a fresh cache.
FORMAT_VERSION = 1

#: State-dict prefixes of the VQGAN weights that `encode` uses (encoder -> quant_conv -> logits projection).
ENCODE_PREFIXES = ("encoder.", "quant_conv.", "quantize.proj.")

# Entry file: header | codes (little-endian, dtype by code) | blake2b-128 of header + codes.
# Header fields: magic, format version, dtype code, reserved, number of codes, sha256 of the entry's identity
# (setting key / image sha / view tag), so a file copied or renamed to another entry's name is refused too.
_MAGIC = b"RFTC"
_HEADER = struct.Struct("<4sBBHI32s")
_CHECKSUM_BYTES = 16
_DTYPES = {1: np.dtype("<u2"), 2: np.dtype("<i4")}

# vqgan object -> (cheap fingerprint of its weight tensors, identity digest); see `vqgan_identity`
_IDENTITY_MEMO: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


class CodeDataset(Protocol):
    """What the cache needs of a dataset (`CaptionedImageDataset` and `FoodDataset` fit).

    `describe(i)["image_sha256"]` is the content hash of item i's image file, read without decoding pixels;
    `self[i]` is a dict with `image`, a (3, S, S) tensor in [0, 1] from the `PREPROCESSING_ID` pipeline, and
    `image_sha256`, the hash of the bytes those pixels were decoded from.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def describe(self, index: int) -> dict[str, Any]: ...


@dataclass
class CacheStats:
    """What one `CodeCache.codes_for` call did.

    Attributes:
        items: dataset items asked for.
        hits: items whose codes (every view) were read from disk.
        misses: items whose image was decoded and encoded.
        encoded: distinct images encoded (items sharing an image file's bytes are encoded once).
        corrupt: entries on disk that failed their checks and were replaced.
        written: entry files written.
        seconds: wall time of the call.
    """

    items: int = 0
    hits: int = 0
    misses: int = 0
    encoded: int = 0
    corrupt: int = 0
    written: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"{self.items} images: {self.hits} read from the code cache, {self.misses} encoded "
                f"({self.encoded} distinct), {self.corrupt} corrupt entries replaced, {self.seconds:.2f} s")


def default_cache_dir() -> Path:
    """The image-code cache folder: `$RUDOLPH_FT_CACHE/codes`, else `$XDG_CACHE_HOME/rudolph-ft/codes`, else
    `~/.cache/rudolph-ft/codes`."""
    root = os.environ.get(CACHE_ENV, "").strip()
    if root:
        return Path(root).expanduser() / "codes"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rudolph-ft" / "codes"


def vqgan_identity(vqgan: VQGAN) -> str:
    """Hex sha256 naming what a VQGAN's `encode` computes: architecture, memory format and encoder-side weights.

    Hashing the weights reads them once (~0.1 s for the official model's 31M encoder parameters); the digest is
    remembered per VQGAN object and recomputed only when a weight tensor is replaced or changed in place
    (PyTorch's per-tensor version counter), so calling this per run or per call is cheap.
    """
    tensors = [(name, tensor) for name, tensor in vqgan.state_dict(keep_vars=True).items()
               if name.startswith(ENCODE_PREFIXES)]
    fingerprint = tuple((name, t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) for name, t in tensors)
    memo = _IDENTITY_MEMO.get(vqgan)
    if memo is not None and memo[0] == fingerprint:
        return memo[1]
    architecture = {key: value for key, value in vqgan.config.to_dict().items() if key not in ("hub", "name")}
    conv_in = vqgan.encoder.conv_in.weight  # channels-last weights run (and round) differently, see `VQGAN`
    layout = "channels_last" if not conv_in.is_contiguous() else "contiguous"
    digest = hashlib.sha256(json.dumps({"config": architecture, "layout": layout}, sort_keys=True).encode())
    for name, tensor in tensors:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        flat = tensor.detach().reshape(-1).contiguous().cpu()  # logical order, whatever the memory format
        digest.update(flat.view(torch.uint8).numpy())
    _IDENTITY_MEMO[vqgan] = (fingerprint, digest.hexdigest())
    return digest.hexdigest()


def _bytes_writer(data: bytes) -> Callable[[str], int]:
    """A writer for `atomic_write` that puts `data` into the temporary file."""
    return lambda tmp: Path(tmp).write_bytes(data)


def gumbel_seed(image_sha256: str, view: int, seed: int) -> int:
    """The random seed of Gumbel view `view` (>= 1) of an image: a 63-bit number from (image hash, view, seed)."""
    digest = hashlib.sha256(f"rudolph-ft/gumbel-view/{image_sha256}/{view}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class CodeCache:
    """VQGAN codes of dataset images, encoded once and kept on disk (see the module docstring for keys and layout).

    Example:
        >>> cache = CodeCache(None, load_vqgan("sber-gumbel-f8"), image_size=128, views=4)
        >>> codes = cache.codes_for(train_dataset)  # (N, 4, 256) int64; view 0 = argmax codes
        >>> print(cache.stats)  # 1000 images: 990 read from the code cache, 10 encoded (10 distinct), ...

    Encoding runs where the VQGAN's weights are (move it to a GPU first to build a big cache faster), in eval mode.
    Processes sharing a folder never corrupt it, but each encodes what it misses: with several processes (DDP), let
    the main one fill the cache first (e.g. accelerate's `main_process_first()`), then the others only read.
    Codes depend on the weights and on the device's numerics: a cache built on a GPU may differ from a CPU-built
    one in the rare cells whose two best logits nearly tie; the Gumbel noise itself is drawn on the CPU, so the
    sampled views do not depend on the device's random generator.

    Args:
        directory: the cache folder; None for `default_cache_dir()`. Created when first written.
        vqgan: the image tokenizer (`rudolph_ft.model.vqgan.VQGAN`).
        image_size: side in pixels of the images encoded; datasets given to `codes_for` must yield this size.
        views: code grids per image: 1 = the argmax codes; K > 1 adds K - 1 Gumbel-sampled grids.
        temperature: > 0, sampling temperature of the Gumbel views.
        seed: seed of the Gumbel views (with each image's hash and the view index, see `gumbel_seed`).
        batch_size: images encoded per VQGAN call when building entries.
        num_workers: `DataLoader` worker processes decoding the images to encode (0 = in this process).
    """

    def __init__(
        self,
        directory: str | os.PathLike | None,
        vqgan: VQGAN,
        *,
        image_size: int,
        views: int = 1,
        temperature: float = 1.0,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1 (1 = argmax codes only), got {views}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.vqgan = vqgan
        self.image_size = image_size
        self.tokens_per_dim = vqgan.image_tokens_per_dim(image_size)  # raises unless a multiple of 8
        self.views = views
        self.temperature = float(temperature)
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.stats = CacheStats()
        self._dtype_code = 1 if vqgan.num_codes <= 1 << 16 else 2

    # Keys and paths ----------------------------------------------------------------------------------------------
    @property
    def sequence_length(self) -> int:
        """Codes per image grid (h * w: 256 at 128 px)."""
        return self.tokens_per_dim**2

    def settings(self) -> dict[str, Any]:
        """What the codes depend on besides the image and the view: written to `settings.json` of the setting."""
        config = {key: value for key, value in self.vqgan.config.to_dict().items() if key not in ("hub", "name")}
        return {
            "format_version": FORMAT_VERSION,
            "vqgan_identity": vqgan_identity(self.vqgan),
            "vqgan_name": self.vqgan.config.name,
            "vqgan_config": config,
            "preprocessing": PREPROCESSING_ID,
            "image_size": self.image_size,
        }

    def setting_dir(self) -> Path:
        """The folder holding this VQGAN + preprocessing's entries (its name is a hash of `settings()`)."""
        settings = self.settings()
        settings.pop("vqgan_name")  # a label only: the same weights under another name give the same codes
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
        return self.directory / f"v{FORMAT_VERSION}-{key}"

    def view_tag(self, view: int) -> str:
        """The file-name part naming a view: `argmax`, or `gumbel-t<temperature>-s<seed>-v<view>`."""
        if not 0 <= view < self.views:
            raise IndexError(f"view {view} is out of range for a cache of {self.views} views")
        return "argmax" if view == 0 else f"gumbel-t{self.temperature!r}-s{self.seed}-v{view}"

    def entry_path(self, image_sha256: str, view: int = 0) -> Path:
        """The file of one image's codes in one view."""
        return self._entry_path(self.setting_dir(), image_sha256, view)

    def _entry_path(self, setting_dir: Path, image_sha256: str, view: int) -> Path:
        return setting_dir / image_sha256[:2] / f"{image_sha256}.{self.view_tag(view)}.codes"

    # The public call ---------------------------------------------------------------------------------------------
    def codes_for(self, dataset: CodeDataset, *, progress: bool = True) -> torch.Tensor:
        """Codes of every dataset item: read from the cache, or encoded (batched, with a progress bar) and stored.

        Args:
            dataset: a `CaptionedImageDataset` (or anything with `describe(i)` and items as in `CodeDataset`). Its
                content hashes come from `describe`: from the data check, or hashing each file (not decoding it).
            progress: show a tqdm progress bar while encoding misses.

        Returns:
            (N, views, h*w) int64 codes in item order; view 0 = argmax codes. `self.stats` says what was read,
            encoded and replaced.

        Raises:
            ValueError: the dataset's images are not `image_size` pixels.
            ImageLoadError: an image to encode can no longer be read (it changed since the dataset was checked).
        """
        start = time.perf_counter()
        self._check_image_size(getattr(getattr(dataset, "config", None), "image_size", None), dataset)
        setting_dir = self.setting_dir()
        stats = CacheStats(items=len(dataset))
        codes = torch.empty(len(dataset), self.views, self.sequence_length, dtype=torch.long)  # (N, K, h*w)
        found: dict[str, torch.Tensor | None] = {}
        missing: dict[str, list[int]] = {}  # image sha256 -> the items showing that image
        for index in range(len(dataset)):
            sha256 = dataset.describe(index)["image_sha256"]
            if sha256 not in found:
                found[sha256] = self._read_views(setting_dir, sha256, stats)
            if found[sha256] is None:
                missing.setdefault(sha256, []).append(index)
            else:
                codes[index] = found[sha256]
        stats.misses = sum(len(indices) for indices in missing.values())
        stats.hits = stats.items - stats.misses
        if missing:
            self._encode_missing(dataset, setting_dir, missing, codes, stats, progress)
        stats.seconds = time.perf_counter() - start
        self.stats = stats
        logger.info("%s (%s)", stats, setting_dir)
        return codes

    # Reading -----------------------------------------------------------------------------------------------------
    def _read_views(self, setting_dir: Path, image_sha256: str, stats: CacheStats) -> torch.Tensor | None:
        """(views, h*w) codes of one image from disk, or None when any view is missing or corrupt."""
        grids = []
        for view in range(self.views):
            path = self._entry_path(setting_dir, image_sha256, view)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as err:
                self._note_corrupt(path, f"unreadable ({err.strerror or err})", stats)
                return None
            grid = self._unpack(data, self._entry_digest(setting_dir, image_sha256, view))
            if isinstance(grid, str):
                self._note_corrupt(path, grid, stats)
                return None
            grids.append(grid)
        return torch.from_numpy(np.stack(grids).astype(np.int64))  # (views, h*w)

    @staticmethod
    def _note_corrupt(path: Path, reason: str, stats: CacheStats) -> None:
        stats.corrupt += 1
        logger.warning("image-code cache entry %s is %s; re-encoding the image", path, reason)

    def _entry_digest(self, setting_dir: Path, image_sha256: str, view: int) -> bytes:
        return hashlib.sha256(f"{setting_dir.name}/{image_sha256}/{self.view_tag(view)}".encode()).digest()

    def _unpack(self, data: bytes, entry_digest: bytes) -> np.ndarray | str:
        """An entry file's codes, (h*w,) ints, or a string saying why the file is not a valid entry."""
        if len(data) < _HEADER.size + _CHECKSUM_BYTES:
            return f"truncated ({len(data)} bytes)"
        magic, version, dtype_code, _, count, digest = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != FORMAT_VERSION or dtype_code not in _DTYPES:
            return "not a code-cache entry of this version"
        dtype = _DTYPES[dtype_code]
        end = _HEADER.size + count * dtype.itemsize
        if count != self.sequence_length or len(data) != end + _CHECKSUM_BYTES:
            return f"of the wrong size ({len(data)} bytes for {count} codes)"
        if digest != entry_digest:
            return "another entry's file (its key does not match its name)"
        if hashlib.blake2b(data[:end], digest_size=_CHECKSUM_BYTES).digest() != data[end:]:
            return "damaged (checksum mismatch)"
        return np.frombuffer(data, dtype=dtype, count=count, offset=_HEADER.size)

    # Encoding and writing ----------------------------------------------------------------------------------------
    def _encode_missing(
        self,
        dataset: CodeDataset,
        setting_dir: Path,
        missing: dict[str, list[int]],
        codes: torch.Tensor,
        stats: CacheStats,
        progress: bool,
    ) -> None:
        """Decode, encode and store each missing image once (batched), filling `codes` rows of all its items."""
        described = list(missing)  # image sha256 per distinct image, in encoding order
        first_items = Subset(dataset, [missing[sha256][0] for sha256 in described])
        loader = DataLoader(first_items, batch_size=self.batch_size, num_workers=self.num_workers,
                            collate_fn=collate_images)
        bar = tqdm(total=len(described), desc="encoding images (VQGAN)", unit="img", disable=not progress)
        was_training = self.vqgan.training
        self.vqgan.eval()
        try:
            done, writable = 0, True
            for batch in loader:
                images = batch["image"]  # (B, 3, S, S)
                self._check_image_size(images.shape[-1], dataset)
                grids = self._encode_views(images, batch["image_sha256"])  # (B, views, h*w)
                for offset, content_sha256 in enumerate(batch["image_sha256"]):
                    codes[missing[described[done + offset]]] = grids[offset]  # every item showing the image
                    # stored under the hash of the bytes actually decoded: the file may have changed since
                    # `describe` hashed it
                    writable = writable and self._write_views(setting_dir, content_sha256, grids[offset], stats)
                done += len(images)
                stats.encoded += len(images)
                bar.update(len(images))
        finally:
            self.vqgan.train(was_training)
            bar.close()

    def encode_views(self, images: torch.Tensor, image_sha256s: Sequence[str]) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1] -> (B, views, h*w) codes, as the cache stores them, without the disk (images
        that are not files of a dataset: a multitask table's); `image_sha256s`: their files' content hashes."""
        return self._encode_views(images, image_sha256s)

    @torch.inference_mode()
    def _encode_views(self, images: torch.Tensor, image_sha256s: Sequence[str]) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1] -> (B, views, h*w) int64 codes on the CPU: argmax, then Gumbel views."""
        logits = self.vqgan.encode_logits(images)  # (B, n_embed, h, w)
        grids = [logits.argmax(dim=1).flatten(1).cpu()]  # what `VQGAN.encode(images)` returns
        for view in range(1, self.views):
            sampled = []
            for logits_one, image_sha256 in zip(logits.split(1), image_sha256s, strict=True):  # (1, n_embed, h, w) each
                generator = torch.Generator().manual_seed(gumbel_seed(image_sha256, view, self.seed))
                # as `VQGAN.encode(gumbel=True)` samples one float32 image on the CPU; the noise is always drawn
                # on the CPU to keep the views device-independent
                codes = gumbel_max_codes(logits_one.float(), temperature=self.temperature, generator=generator,
                                         noise_device="cpu")
                sampled.append(codes.cpu())
            grids.append(torch.cat(sampled))
        return torch.stack(grids, dim=1)  # (B, views, h*w)

    def _write_views(self, setting_dir: Path, image_sha256: str, grids: torch.Tensor, stats: CacheStats) -> bool:
        """Store one image's (views, h*w) codes, one atomic file per view; False (and a warning) when not writable."""
        try:
            self._write_settings(setting_dir)
            (setting_dir / image_sha256[:2]).mkdir(parents=True, exist_ok=True)
            for view, grid in enumerate(grids):
                data = self._pack(grid, self._entry_digest(setting_dir, image_sha256, view))
                atomic_write(self._entry_path(setting_dir, image_sha256, view), _bytes_writer(data))
                stats.written += 1
        except OSError as err:
            warnings.warn(
                f"cannot write to the image-code cache {setting_dir} ({err.strerror or err}); the codes of this "
                f"run are used but not kept. Make the folder writable, or point `cache_dir` or ${CACHE_ENV} elsewhere.",
                stacklevel=4,
            )
            return False
        return True

    def _write_settings(self, setting_dir: Path) -> None:
        path = setting_dir / "settings.json"
        if not path.is_file():
            setting_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.settings(), indent=2, ensure_ascii=False) + "\n"
            atomic_write(path, _bytes_writer(text.encode("utf-8")))

    def _pack(self, grid: torch.Tensor, entry_digest: bytes) -> bytes:
        """One view's (h*w,) codes as an entry file's bytes (see `_HEADER`)."""
        payload = grid.numpy().astype(_DTYPES[self._dtype_code]).tobytes()
        header = _HEADER.pack(_MAGIC, FORMAT_VERSION, self._dtype_code, 0, grid.numel(), entry_digest)
        return header + payload + hashlib.blake2b(header + payload, digest_size=_CHECKSUM_BYTES).digest()

    # Checks ------------------------------------------------------------------------------------------------------
    def _check_image_size(self, size: int | None, dataset: CodeDataset) -> None:
        if size is not None and size != self.image_size:
            raise ValueError(
                f"{dataset!r} yields {size} px images but this code cache encodes {self.image_size} px ones; "
                f"build the dataset with image_size={self.image_size} or the cache with image_size={size}"
            )

    def __repr__(self) -> str:
        return (f"CodeCache({str(self.directory)!r}, VQGAN {self.vqgan.config.name or 'custom'}, "
                f"image_size={self.image_size}, views={self.views}, temperature={self.temperature}, seed={self.seed})")
