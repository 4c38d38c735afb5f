"""Everything a run needs before its first step: model, tokenizers and the data as tensors (checked, split,
encoded once)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..components import TOKENIZER_NAME, Components
from ..config import VQGAN_PRESETS
from ..io import atomic_write
from .config import DataSection, TrainConfig
from .data import Examples

__all__ = ["Prepared", "prepare_run", "default_encode_batch_size", "run_dataset", "check_learned_tokenizer",
           "learning_task_texts"]

BPE_SETTINGS = "bpe.settings.json"  # beside a learned bpe.model: the settings it was learned with


@dataclass
class Prepared:
    components: Components
    train: Examples
    val: Examples
    component_names: dict  # official names to record instead of copies (save_components keywords)
    data_report: object

    @property
    def l_text_seq_length(self) -> int:
        return self.components.model.config.l_text_seq_length


def prepare_run(config: TrainConfig, run_dir: Path, checkpoint: Path | None, *, echo: Callable[[str], None] = print,
                accelerator=None, encode_batch_size: int | None = None) -> Prepared:
    """Load (or resume) the model, tokenizer and VQGAN; check, split and encode the data.

    Images are encoded on the training device (`accelerator.device`; the CPU without an accelerator) in batches of
    `encode_batch_size` (default `default_encode_batch_size(device)`), only the VQGAN's encoding half moving there
    and back; the codes, like all training data, stay on the CPU.

    With several processes (an `accelerate.Accelerator` of a torchrun launch) the run is prepared once, not once per
    process: the main process checks the data, learns and writes the tokenizer and encodes the images (filling the
    code cache), then sends the examples to the others, which only load the model, the VQGAN and the tokenizer the
    main process wrote. A failure on the main process is reported to the others, so none waits forever.
    """
    device = torch.device("cpu") if accelerator is None else torch.device(accelerator.device)
    batch_size = default_encode_batch_size(device) if encode_batch_size is None else encode_batch_size
    if batch_size < 1:
        raise ValueError(f"encode_batch_size must be >= 1, got {batch_size}")
    if accelerator is None or accelerator.num_processes == 1:
        return _prepare(config, run_dir, checkpoint, echo, device, batch_size)
    if accelerator.is_main_process:
        try:
            prepared = _prepare(config, run_dir, checkpoint, echo, device, batch_size)
        except Exception as error:  # tell the others, waiting in the broadcast below, then fail here as usual
            _broadcast(_MainFailed(f"{type(error).__name__}: {error}"))
            raise
        _broadcast(_Shared(prepared.train, prepared.val, prepared.data_report))
        return prepared
    shared = _broadcast(None)
    if isinstance(shared, _MainFailed):
        raise RuntimeError(f"the main process could not prepare the run ({shared.message})")
    # loaded only now: whatever the main process downloaded or wrote (RUN/bpe.model) is there
    model, vqgan, random_vqgan = _load_models(config, checkpoint)
    from ..tokenizer import load_tokenizer

    named = _tokenizer_name(config)
    tokenizer = load_tokenizer(named if named is not None else run_dir / TOKENIZER_NAME)
    _check_vocabularies(model.config, tokenizer, vqgan)
    return Prepared(Components(model, tokenizer, vqgan), shared.train, shared.val,
                    _component_names(config, random_vqgan), shared.report)


def default_encode_batch_size(device: torch.device) -> int:
    """Images per VQGAN call: 16 on the CPU (the batching codes were always computed in, so CPU codes stay bitwise
    what they were: another batching moves logits by ~5e-6 and may flip near-ties), 64 on an accelerator."""
    return 16 if device.type == "cpu" else 64


@dataclass
class _Shared:
    """What the main process prepares for all: the examples of both splits and the data check's report."""

    train: Examples
    val: Examples
    report: object


@dataclass
class _MainFailed:
    message: str


def _broadcast(payload):
    """The main process's `payload`, on every process (pickled through the process group: gloo or NCCL)."""
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([payload], from_process=0)[0]


def _prepare(config: TrainConfig, run_dir: Path, checkpoint: Path | None, echo, device: torch.device,
             batch_size: int) -> Prepared:
    """Everything, in this process: what a single process does, and the main process of several."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model, vqgan, random_vqgan = _load_models(config, checkpoint)
    dataset = _load_dataset(config, model.config.image_size, echo)
    train_set, val_set = dataset.split()
    tokenizer = _tokenizer(config, run_dir, train_set.captions, echo)
    _check_vocabularies(model.config, tokenizer, vqgan)
    components = Components(model, tokenizer, vqgan)
    with _encoder_on(vqgan, device):
        if config.vqgan.fit == "kmeans":  # before any encoding; a resumed run refits the same (seeded, same photos)
            if not random_vqgan or config.model.pretrained:  # a trained model's codes must stay the ones it knows
                raise ValueError("vqgan.fit=kmeans is for from-scratch runs on a preset without weights (tiny, "
                                 f"palette), not vqgan.name={config.vqgan.name} with "
                                 f"model.pretrained={config.model.pretrained}: set vqgan.fit=none")
            photos = torch.stack([train_set[i]["image"] for i in range(len(train_set))])
            fit_kmeans_quantizer(vqgan, photos, seed=config.train.seed)
            echo(f"vqgan: codes fitted by k-means to {len(photos)} training photos")
        if config.model.image_embeddings == "tokenizer" and checkpoint is None:  # a resumed run has its embeddings
            if config.model.pretrained:
                raise ValueError("model.image_embeddings=tokenizer starts the embeddings of a from-scratch run "
                                 "(model.pretrained=false); a pretrained model keeps its own: set it to random")
            init_image_embeddings(model, vqgan, seed=config.train.seed)
            echo("model: image-token embeddings start from the tokenizer's colour patterns")
        train = _examples(train_set, components, config, echo, batch_size)
        val = _examples(val_set, components, config, echo, batch_size)
    echo(f"data: {len(train)} training and {len(val)} validation examples")
    return Prepared(components, train, val, _component_names(config, random_vqgan), dataset.report)


def _load_models(config: TrainConfig, checkpoint: Path | None):
    """(model in train mode, VQGAN on the CPU, whether the VQGAN is a seeded random one)."""
    from ..model import load_model
    from ..model.vqgan import load_vqgan

    if checkpoint is not None:
        model = load_model(checkpoint)
    else:
        model = load_model(config.model.name, pretrained=config.model.pretrained, **config.model.overrides)
    model.train()
    random_vqgan = config.vqgan.name in VQGAN_PRESETS and VQGAN_PRESETS[config.vqgan.name].hub is None
    vqgan = load_vqgan(config.vqgan.name, seed=config.vqgan.seed if random_vqgan else None)
    _check_image_layout(model.config, vqgan)
    if config.vqgan.augment == "gumbel" and not hasattr(vqgan, "quantize"):
        raise ValueError(f"vqgan.augment=gumbel samples a VQGAN's codes; the {config.vqgan.name} tokenizer has none to "
                         "sample: use vqgan.augment=shift or dihedral")
    return model, vqgan, random_vqgan


def _component_names(config: TrainConfig, random_vqgan: bool) -> dict:
    """Official components are recorded by name; anything else is copied into each saved model directory."""
    return {"tokenizer_name": config.tokenizer.name if config.tokenizer.name == "rudalle" else None,
            "vqgan_name": None if random_vqgan or config.vqgan.name not in VQGAN_PRESETS else config.vqgan.name}


@contextmanager
def _encoder_on(vqgan, device: torch.device) -> Iterator[None]:
    """The VQGAN's encoding half (encoder, quant_conv, logits projection: what `encode` runs) on `device` for the
    block, back on the CPU after it, where checkpoints save it and caption sampling finds it. The decoder and the
    codebook, which encoding never reads, do not take device memory."""
    if device.type == "cpu":
        yield
        return
    parts = vqgan.encoding_modules()
    try:
        for part in parts:
            part.to(device)
        yield
    finally:
        for part in parts:
            part.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the encoder's activations: give the training model the memory back


def run_dataset(data: DataSection, image_size: int, *, progress: bool = False):
    """The checked dataset a run's `data` section names (split it with `.split()`)."""
    from ..data import CaptionedImageDataset
    from ..data.config import config_for

    return CaptionedImageDataset(config_for(
        data.path, data.images_root, template=data.caption, caption_column=data.caption_column,
        image_size=image_size, val_fraction=data.val_fraction, split_seed=data.split_seed,
        allow_outside_root=data.allow_outside_root), progress=progress)


def _load_dataset(config: TrainConfig, image_size: int, echo):
    data = config.data
    dataset = run_dataset(data, image_size, progress=config.logging.progress)
    report = dataset.report
    if report.excluded:
        echo(report.summary())  # every excluded row with its reason: never a silent substitute
    if len(dataset) == 0:
        raise ValueError(f"{data.path}: no usable rows (see the report above; `rudolph-ft data check {data.path}`)")
    return dataset


def _tokenizer(config: TrainConfig, run_dir: Path, captions: list[str], echo):
    """The run's tokenizer: tokenizer.name's, the trained model's, or (null) a BPE learned from the training texts:
    the training captions, then (a multitask run) the left and right texts of the tasks.path table, lower-cased as
    `TaskLayout.encode` encodes them, so that their characters («э», «?», «ё», ...) get ids of their own."""
    from ..tokenizer import load_tokenizer, train_tokenizer

    learned = run_dir / TOKENIZER_NAME
    if config.tokenizer.name is not None:
        return load_tokenizer(config.tokenizer.name)
    named = _tokenizer_name(config)
    if named is not None:
        echo(f"tokenizer: {named}, the one model.name={config.model.name} was trained with (tokenizer.name: null "
             "learns one only for a model trained from scratch: new ids would mean other words to a trained model)")
        return load_tokenizer(named)
    task_texts = learning_task_texts(config)
    if learned.is_file():  # resumed run: the vocabulary learned at its start, if this config would learn the same
        check_learned_tokenizer(config, run_dir, captions, echo, task_texts=task_texts)
        return load_tokenizer(learned)
    # a single-task run learns from its captions alone, as it always did (the same bpe.model, byte for byte)
    tokenizer = train_tokenizer(captions + (task_texts or []), config.tokenizer.train_vocab_size,
                                split_digits=config.tokenizer.split_digits)
    # the settings first: a bpe.model always has the settings that made it beside it
    text = json.dumps(_bpe_settings(config, captions, task_texts), indent=2, ensure_ascii=False) + "\n"
    atomic_write(run_dir / BPE_SETTINGS, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    tokenizer.save(learned)
    tasks = f" and {len(task_texts)} task texts of {config.tasks.path}" if task_texts is not None else ""
    echo(f"tokenizer: learned {tokenizer.vocab_size} BPE ids from {len(captions)} training captions{tasks} -> "
         f"{learned}")
    return tokenizer


def learning_task_texts(config: TrainConfig) -> list[str] | None:
    """What a learned tokenizer learns from a multitask run's table (tasks.path: its training rows; validation rows
    live in another file): every row's left text, then its right text (empty ones skipped), lower-cased and stripped
    (`normalize_text`, as `TaskLayout.encode` encodes them). None for a single-task run."""
    if config.tasks.path is None:
        return None
    from ..data.tasks_data import read_task_table
    from ..tokenizer import normalize_text

    table = read_task_table(config.tasks.path, config.tasks.images_root,
                            allow_outside_root=config.data.allow_outside_root)
    return [normalize_text(text) for row in table.rows for text in (row.left_text, row.right_text) if text.strip()]


def _tokenizer_name(config: TrainConfig) -> str | None:
    """tokenizer.name, else (null: learn one) the tokenizer of the trained model folder model.name names, if any."""
    if config.tokenizer.name is not None or not Path(config.model.name).expanduser().is_dir():
        return config.tokenizer.name
    from ..components import _named_components
    from ..hub import resolve_model_dir

    try:
        folder = resolve_model_dir(config.model.name)
    except FileNotFoundError:  # an official checkpoint's folder (pytorch_model.bin): the official tokenizer
        return None
    return _named_components(folder).get("tokenizer")


def _bpe_settings(config: TrainConfig, captions: list[str], task_texts: list[str] | None = None) -> dict:
    """What a learned bpe.model depends on: the vocabulary size and the training captions (data, split), and a
    multitask run's task texts (`learning_task_texts`; the keys are absent for a single-task run)."""
    digest = hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest()
    settings = {"train_vocab_size": config.tokenizer.train_vocab_size,
                "data_path": str(Path(config.data.path).absolute()), "split_seed": config.data.split_seed,
                "val_fraction": config.data.val_fraction, "captions": len(captions), "captions_sha256": digest}
    if config.tokenizer.split_digits:  # (absent when off: the settings files written before the option)
        settings["split_digits"] = True
    if task_texts is not None:
        settings.update({"tasks_path": str(Path(config.tasks.path).absolute()), "task_texts": len(task_texts),
                         "task_texts_sha256": hashlib.sha256("\n".join(task_texts).encode("utf-8")).hexdigest()})
    return settings


_SETTING_KEYS = {"train_vocab_size": "tokenizer.train_vocab_size", "split_seed": "data.split_seed",
                 "val_fraction": "data.val_fraction", "split_digits": "tokenizer.split_digits"}
_SETTING_DEFAULTS = {"split_digits": False}


def check_learned_tokenizer(config: TrainConfig, run_dir: Path, captions: list[str] | None = None,
                            echo: Callable[[str], None] = print, *, task_texts: list[str] | None = None) -> None:
    """Raise ValueError, naming both values, when RUN/bpe.model was learned with other settings than `config`'s.

    Without `captions` only the config is compared (before any work, e.g. before a resume rewrites
    run_config.yaml); with them also the training captions it was learned from, and the task texts
    (`learning_task_texts`: None for a single-task run).
    """
    learned, saved_file = run_dir / TOKENIZER_NAME, run_dir / BPE_SETTINGS
    if config.tokenizer.name is not None or not learned.is_file():
        return
    if not saved_file.is_file():  # written by a rudolph-ft that kept no settings: nothing to compare
        if captions is not None:
            echo(f"note: reusing {learned} unchecked (no {BPE_SETTINGS} beside it)")
        return
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    ours = _bpe_settings(config, captions or [], task_texts)
    what = "; start this run in another output_dir, or delete both files to learn the tokenizer again"
    for key, name in _SETTING_KEYS.items():
        default = _SETTING_DEFAULTS.get(key)
        if saved.get(key, default) != ours.get(key, default):
            raise ValueError(f"{learned} was learned with {name}={saved.get(key, default)} ({saved_file}), this run's "
                             f"config says {ours.get(key, default)}{what}")
    if captions is not None and saved.get("captions_sha256") != ours["captions_sha256"]:
        def described(values: dict) -> str:
            return (f"{values.get('captions')} training captions of {values.get('data_path')} (sha256 "
                    f"{str(values.get('captions_sha256'))[:12]})")

        raise ValueError(f"{learned} was learned from {described(saved)} ({saved_file}), this run has "
                         f"{described(ours)}: the data changed{what}")
    if captions is not None and saved.get("task_texts_sha256") != ours.get("task_texts_sha256"):
        def tasks(values: dict) -> str:
            if "task_texts_sha256" not in values:
                return "no task texts (the captions alone)"
            return (f"{values.get('task_texts')} task texts of {values.get('tasks_path')} (sha256 "
                    f"{str(values.get('task_texts_sha256'))[:12]})")

        raise ValueError(f"{learned} was learned from {tasks(saved)} ({saved_file}), this run has {tasks(ours)}: the "
                         f"task texts differ{what}")


def _check_image_layout(model_config, vqgan) -> None:
    expected = vqgan.image_tokens_per_dim(model_config.image_size)
    if expected != model_config.image_tokens_per_dim:
        raise ValueError(f"the VQGAN turns {model_config.image_size} px images into {expected}x{expected} codes, the "
                         f"model expects {model_config.image_tokens_per_dim}x{model_config.image_tokens_per_dim}")


def _check_vocabularies(model_config, tokenizer, vqgan) -> None:
    if vqgan.num_codes > model_config.image_vocab_size:
        raise ValueError(f"the VQGAN has {vqgan.num_codes} codes but the model only {model_config.image_vocab_size} "
                         "image tokens: pick a matching vqgan.name")
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's text vocabulary is "
                         f"{model_config.vocab_size}: pick a matching tokenizer or a smaller train_vocab_size")


def _examples(dataset, components: Components, config: TrainConfig, echo, batch_size: int) -> Examples:
    r_len = components.model.config.r_text_seq_length
    captions = dataset.captions
    codes = _image_codes(dataset, components.vqgan, config, components.model.config.image_seq_length, batch_size)
    r_text = components.tokenizer.encode_batch(captions, r_len) if captions else torch.zeros(0, r_len, dtype=torch.long)
    too_long = int((r_text[:, -1] != 0).sum()) if len(captions) else 0
    if too_long:
        echo(f"note: {too_long} caption(s) longer than the right text ({r_len} tokens) are truncated")
    meta = [{**dataset.describe(i), "image_path": str(dataset.record(i).image_path)} for i in range(len(dataset))]
    return Examples(codes=codes, captions=captions, r_text=r_text, meta=meta)


@torch.inference_mode()
def fit_kmeans_quantizer(vqgan, images: torch.Tensor, *, iterations: int = 25, seed: int = 0,
                         batch_size: int = 50) -> None:
    """Replace a VQGAN's code projection by k-means centroids of its encoder features on `images` (B, 3, S, S).

    The codebook logits are `proj(z)`; with weight c_k and bias -|c_k|^2 / 2 their argmax is the nearest centroid, so
    the codes become a k-means vector quantizer of the encoder's features, fitted to the photos without labels
    (centroids start on random features; an empty cluster restarts on a random feature). A random projection, by
    contrast, uses about half the codebook of the tiny VQGAN and splits features by direction alone. The decoder and
    the codebook embeddings (image generation) are left as they are.
    """
    from ..model.palette import PaletteTokenizer, kmeans

    if isinstance(vqgan, PaletteTokenizer):  # the palette itself is the k-means quantizer
        vqgan.fit(images, iterations=iterations, seed=seed, batch_size=batch_size)
        return
    device = vqgan.quantize.proj.weight.device
    features = torch.cat([vqgan.quant_conv(vqgan.encoder(images[i:i + batch_size].to(device) * 2 - 1))
                          for i in range(0, len(images), batch_size)])  # (N, z_channels, h, w)
    points = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).float().cpu()  # (N*h*w, z_channels)
    centroids = kmeans(points, vqgan.quantize.proj.out_channels, iterations=iterations, seed=seed)
    proj = vqgan.quantize.proj
    proj.weight.copy_(centroids[:, :, None, None].to(proj.weight))
    proj.bias.copy_((-centroids.square().sum(1) / 2).to(proj.bias))


@torch.no_grad()
def init_image_embeddings(model, tokenizer, *, seed: int = 0) -> None:
    """Start a fresh model's image-token embeddings from the tokenizer's code features (`centroid_features`, the
    palette's standardised colour patterns), so codes of like colours start as like tokens: row k is the features of
    code k through a seeded random orthonormal map into the hidden size, scaled to the usual init (std 0.02 per
    number), plus a little noise (std 0.01) that keeps codes of equal features apart."""
    if not hasattr(tokenizer, "centroid_features"):
        raise ValueError("model.image_embeddings=tokenizer needs a tokenizer with code features (vqgan.name=palette)")
    features = tokenizer.centroid_features()  # (K, F), standardised
    weight = model.image_embeddings.weight
    hidden, count, size = weight.shape[1], features.shape[0], features.shape[1]
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(hidden, size, generator=generator)).Q  # (hidden, F), orthonormal columns
    rows = features @ basis.T * (0.02 * math.sqrt(hidden / size)) + 0.01 * torch.randn(count, hidden,
                                                                                       generator=generator)
    weight[:count] = rows.to(weight)


def dihedral(images: torch.Tensor, view: int) -> torch.Tensor:
    """View `view` (0..7) of the dihedral group: rotation by 90 degrees x (view % 4), mirrored when view >= 4."""
    images = torch.rot90(images, view % 4, dims=(-2, -1))
    return images.flip(-1) if view >= 4 else images


def _image_codes(dataset, vqgan, config: TrainConfig, image_seq_length: int, batch_size: int) -> torch.Tensor:
    """(N, views, h*w) codes of every image, on the CPU; view 0 is the photo's argmax codes.

    Argmax and Gumbel views come from the on-disk `CodeCache` (encoded once across epochs and runs); dihedral
    views encode rotated / mirrored photos in memory. Encoding runs where the VQGAN's encoder is (see `_encoder_on`),
    `batch_size` images per call.
    """
    from ..data.cache import CodeCache

    views = config.vqgan.views
    if len(dataset) == 0:
        return torch.zeros(0, views, image_seq_length, dtype=torch.long)
    if config.vqgan.augment == "gumbel":
        cache = CodeCache(config.data.cache_dir, vqgan, image_size=dataset.config.image_size, views=views,
                          seed=config.train.seed, batch_size=batch_size)
        return cache.codes_for(dataset, progress=config.logging.progress)
    device = vqgan.encoder_device
    encode = view_encoder(vqgan, config, dataset.config.image_size, image_seq_length, len(dataset),
                          shift_seed=config.train.seed)
    batches = []
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        images = torch.stack([dataset[i]["image"] for i in indices])
        batches.append(encode(images.to(device), None, indices))
    return torch.cat(batches)  # outside inference mode: a normal tensor


def view_encoder(vqgan, config: TrainConfig, image_size: int, image_seq_length: int, count: int, *,
                 shift_seed: int) -> Callable:
    """The run's image views (vqgan.views, vqgan.augment) of a list of `count` images: a function (images
    (B, 3, S, S) in [0, 1], their files (Gumbel views are seeded by each file's content), their indices in the list
    (shift views are drawn per index from `shift_seed`)) -> (B, views, h*w) codes on the CPU. data.path's photos get
    their Gumbel views through the on-disk `CodeCache` instead (`_image_codes`); a multitask table's all come here."""
    views = config.vqgan.views
    if config.vqgan.augment == "gumbel":
        from ..data.cache import CodeCache
        from ..data.images import file_sha256

        cache = CodeCache(None, vqgan, image_size=image_size, views=views, seed=config.train.seed)
        return lambda images, paths, indices: cache.encode_views(images, [file_sha256(path) for path in paths])
    patch = image_size // math.isqrt(image_seq_length)  # pixels per code
    shifts = _shifts(count, views, shift_seed, max(1, patch // 2)) if config.vqgan.augment == "shift" else None
    return lambda images, paths, indices: _dihedral_views(vqgan, images, views,
                                                          None if shifts is None else shifts[indices])


def _shifts(count: int, views: int, seed: int, most: int) -> torch.Tensor:
    """(count, views, 2) pixel shifts (dy, dx) in [-most, most] of each photo's views, drawn from `seed`; view 0 and
    the other first 8 (the plain dihedral views) unshifted. A shift that is not a multiple of the VQGAN's patch moves
    every patch boundary: new codes for the same picture, which a tokenizer that hashes patches needs to see."""
    generator = torch.Generator().manual_seed(seed * 104_729 + 17)
    shifts = torch.randint(-most, most + 1, (count, views, 2), generator=generator)
    shifts[:, :8] = 0
    return shifts


def shift_image(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(B, 3, S, S) images moved by (dy, dx) pixels, the edge pixels repeated into the uncovered border."""
    if dy == 0 and dx == 0:
        return images
    pad = max(abs(dy), abs(dx))
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    size_y, size_x = images.shape[-2:]
    return padded[..., pad - dy:pad - dy + size_y, pad - dx:pad - dx + size_x]


@torch.inference_mode()
def _dihedral_views(vqgan, images: torch.Tensor, views: int, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, S, S) images -> (B, views, h*w) argmax codes of dihedral view `v % 8` of each image, moved by
    `shifts[b, v]` (B, views, 2) pixels when given, on the CPU."""
    grids = []
    for view in range(views):
        turned = dihedral(images, view % 8)
        if shifts is not None and bool(shifts[:, view].any()):
            turned = torch.stack([shift_image(turned[b:b + 1], int(dy), int(dx))[0]
                                  for b, (dy, dx) in enumerate(shifts[:, view].tolist())])
        grids.append(vqgan.encode(turned))
    return torch.stack(grids, dim=1).cpu()
