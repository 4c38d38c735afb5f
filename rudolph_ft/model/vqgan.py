"""ruDALL-E's Gumbel VQGAN image tokenizer: images in [0, 1] <-> grids of codebook indices (downsampling 8).

The architecture is taming-transformers' `Encoder`/`Decoder` with a Gumbel quantizer, as wrapped by rudalle's
`VQGanGumbelVAE`; parameter names match the official `vqgan.gumbelf8-sber.model.ckpt` (RECIPE §3), so that file loads
strictly once its loss-only keys are dropped (`LOSS_ONLY_PREFIXES`).

Semantics kept from rudalle 1.1.3:
- `encode`: pixels [0, 1] -> [-1, 1] -> encoder -> `quant_conv` -> 1x1 projection to `n_embed` logits; the code of a
  cell is the argmax of its logits (`get_codebook_indices(img, disable_gumbel_softmax=True)`), or, with
  `gumbel=True`, the argmax of logits + Gumbel noise, which is the code rudalle's default (hard Gumbel-softmax) draws.
- `decode`: codebook rows -> `post_quant_conv` -> decoder -> clamp to [-1, 1] -> [0, 1].
- Attention blocks sit where the *configured* `resolution` meets `attn_resolutions` (the lowest level for the official
  config), whatever the size of the image actually encoded; 128 px images use the same blocks as 256 px ones.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VQGAN_PRESETS, PaletteConfig, VQGANConfig
from ..hub import resolve_file

__all__ = [
    "VQGAN",
    "LOSS_ONLY_PREFIXES",
    "VQGANLoadError",
    "drop_loss_only_keys",
    "vqgan_from_state_dict",
    "load_vqgan",
    "load_vae",
    "save_vqgan",
]

#: State-dict prefixes of a taming training checkpoint that belong to the training loss (LPIPS perceptual network,
#: patch discriminator, `logvar`), not to the tokenizer. rudalle hides them with `strict=False`; we drop exactly these
#: and load everything else strictly.
LOSS_ONLY_PREFIXES: tuple[str, ...] = ("loss.",)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class VQGANLoadError(RuntimeError):
    """A VQGAN checkpoint does not fit the architecture it is loaded into. The message names the keys."""


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (taming-transformers `diffusionmodules.model`, same parameter names)
# ----------------------------------------------------------------------------------------------------------------
def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=padding)


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a (1x1-projected when widths differ) skip connection."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_channels, out_channels)
        # taming's name for the 1x1 skip projection; no parameters (no state-dict keys) when widths agree
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        # in-place SiLU/add on fresh intermediates: same values, less memory traffic (autograd-safe)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W cells of a feature map (1x1-conv projections)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        b, c, height, width = x.shape
        h = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head; SDPA's default scale 1/sqrt(C) is taming's `c ** -0.5`
        q, k, v = (proj(h).flatten(2).transpose(1, 2).unsqueeze(1) for proj in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, H*W, C)
        h = h.transpose(1, 2).reshape(b, c, height, width)
        return self.proj_out(h).add_(x)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (taming's asymmetric padding)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution of the encoder or decoder: resnet blocks, each followed by attention where configured."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool, dropout: float) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(ResnetBlock(widths[i], out_channels, dropout) for i in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(num_blocks if attention else 0))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[i](h)
        return h


class _Middle(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Pixels in [-1, 1] (B, in_channels, H, W) -> latents (B, z_channels, H/f, W/f), f = 2**(len(ch_mult)-1)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        ch, mult = config.ch, (1, *config.ch_mult)
        self.conv_in = _conv3x3(config.in_channels, ch)
        self.down = nn.ModuleList()
        resolution = config.resolution  # static: decides where attention goes, not the input size
        for i in range(len(config.ch_mult)):
            level = _Level(ch * mult[i], ch * mult[i + 1], config.num_res_blocks,
                           resolution in config.attn_resolutions, config.dropout)
            if i != len(config.ch_mult) - 1:
                level.downsample = Downsample(ch * mult[i + 1])
                resolution //= 2
            self.down.append(level)
        width = ch * config.ch_mult[-1]
        self.mid = _Middle(width, config.dropout)
        self.norm_out = _group_norm(width)
        self.conv_out = _conv3x3(width, config.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)  # (B, ch * ch_mult[-1], H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))  # (B, z_channels, H/f, W/f)


class Decoder(nn.Module):
    """Latents (B, z_channels, h, w) -> pixels in about [-1, 1] (B, out_ch, h*f, w*f)."""

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        ch, num_levels = config.ch, len(config.ch_mult)
        width = ch * config.ch_mult[-1]
        resolution = config.resolution // 2 ** (num_levels - 1)
        self.conv_in = _conv3x3(config.z_channels, width)
        self.mid = _Middle(width, config.dropout)
        levels: list[_Level] = []
        for i in reversed(range(num_levels)):  # built lowest resolution first, stored highest first (taming order)
            level = _Level(width, ch * config.ch_mult[i], config.num_res_blocks + 1,
                           resolution in config.attn_resolutions, config.dropout)
            width = ch * config.ch_mult[i]
            if i != 0:
                level.upsample = Upsample(width)
                resolution *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(width)
        self.conv_out = _conv3x3(width, config.out_ch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B, ch * ch_mult[-1], h, w)
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))  # (B, out_ch, H, W)


class GumbelQuantizer(nn.Module):
    """The 1x1 projection to codebook logits and the codebook itself (taming/rudalle `GumbelQuantize`)."""

    def __init__(self, z_channels: int, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(z_channels, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z_channels, h, w) -> (B, n_embed, h, w) logits
        return self.proj(z)


def _like_weight(x: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
    """`x` in the memory format of a 3x3 conv weight: channels-last models (`.to(memory_format=...)`) get
    channels-last activations, everything else NCHW-contiguous ones (1x1 weights cannot tell the formats apart)."""
    if conv_weight.is_contiguous(memory_format=torch.channels_last) and not conv_weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


# ----------------------------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------------------------
def gumbel_max_codes(logits: torch.Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None,
                     noise_device: torch.device | str | None = None) -> torch.Tensor:
    """Codes sampled from softmax(logits / temperature) by the Gumbel-max trick.

    The noise is laid out like torch's gumbel_softmax draws it (NCHW-contiguous, the logits' dtype), so the same
    seed gives rudalle's codes whatever memory format the model runs in.

    Args:
        logits: (B, n_embed, h, w) codebook logits.
        generator: random stream of the noise (the default generator of `noise_device` when None).
        noise_device: where the noise is drawn (default: the logits' device); e.g. "cpu" for device-independent
            samples.

    Returns:
        (B, h*w) int64 codes.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    noise = torch.empty(logits.shape, dtype=logits.dtype, device=noise_device or logits.device)
    noise = noise.exponential_(generator=generator).log_().neg_().to(logits.device)  # ~ Gumbel(0, 1)
    logits = logits / temperature + noise if temperature != 1.0 else logits + noise
    return logits.argmax(dim=1).flatten(1)  # (B, h*w)


class VQGAN(nn.Module):
    """ruDALL-E's Gumbel VQGAN: `encode` images to codebook indices, `decode` indices back to images.

    Parameter names are those of the official checkpoint (rudalle's `vae.model`): `encoder.*`, `decoder.*`,
    `quant_conv.*`, `post_quant_conv.*`, `quantize.proj.*`, `quantize.embed.weight`. Fresh weights are random and
    variance-preserving (convs N(0, 1/fan_in), zero biases, codebook N(0, 1)) with every residual branch starting at
    zero (each resnet block's `conv2` and each attention block's `proj_out`, as zero-init residuals do in ResNets):
    an untrained VQGAN is then a random strided projection of the pixels whose codes follow the image content (on
    40 demo photos, the nearest photo by shared codes shows the same dish 1.6-3.3x as often as with fully random
    residual branches, which turn codes into noise; tested). `load_vqgan` gives trained or seeded ones.

    The model runs in the memory format of its weights: as loaded (NCHW) it reproduces rudalle's codes exactly;
    `vqgan.to(memory_format=torch.channels_last)` encodes ~1.3x faster on CPU and is the fast layout on GPUs
    (with bf16), at the price of a less precise GroupNorm on perfectly flat images (logits move by ~1e-2 there).

    Args:
        config: the architecture; `VQGAN_PRESETS["sber-gumbel-f8"]` is the official one.
    """

    def __init__(self, config: VQGANConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = GumbelQuantizer(config.z_channels, config.embed_dim, config.n_embed)
        # taming's GumbelVQ maps z_channels -> z_channels (rudalle writes embed_dim, the same in its only config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # `apply` visits a block's convs before the block, so the residual branches' zeros overwrite their normals
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=module.weight[0].numel() ** -0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ResnetBlock):
            nn.init.zeros_(module.conv2.weight)
        elif isinstance(module, AttnBlock):
            nn.init.zeros_(module.proj_out.weight)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight)

    # Sizes -------------------------------------------------------------------------------------------------------
    @property
    def downsampling(self) -> int:
        """Pixels per code along each side (8 for the official model)."""
        return self.config.downsampling

    @property
    def encoder_device(self) -> torch.device:
        """Where `encode` runs (the encoder's weights)."""
        return self.encoder.conv_in.weight.device

    def encoding_modules(self) -> tuple[nn.Module, ...]:
        """The parts `encode` reads (training moves them to the accelerator while it encodes)."""
        return (self.encoder, self.quant_conv, self.quantize.proj)

    @property
    def num_codes(self) -> int:
        """Codebook size (`n_embed`, 8192 for the official model)."""
        return self.config.n_embed

    def image_tokens_per_dim(self, image_size: int) -> int:
        """Codes along each side of a square image of `image_size` pixels (16 for 128 px)."""
        if image_size % self.downsampling:
            raise ValueError(f"image size {image_size} px is not a multiple of the downsampling {self.downsampling}")
        return image_size // self.downsampling

    def image_size(self, image_tokens_per_dim: int) -> int:
        """Pixel side of a square image with `image_tokens_per_dim` codes per side (128 for 16)."""
        return image_tokens_per_dim * self.downsampling

    # Encoding ----------------------------------------------------------------------------------------------------
    def encode_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Codebook logits of each cell, (B, 3, H, W) in [0, 1] -> (B, n_embed, H/8, W/8); differentiable."""
        self._check_images(images)
        weight = self.encoder.conv_in.weight
        x = _like_weight(images.to(device=weight.device, dtype=weight.dtype), weight)
        z = self.quant_conv(self.encoder(x * 2.0 - 1.0))  # (B, z_channels, h, w)
        return self.quantize(z)  # (B, n_embed, h, w)

    @torch.inference_mode()
    def encode(
        self,
        images: torch.Tensor,
        *,
        gumbel: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Codebook indices of images, row-major over the code grid.

        Args:
            images: (B, 3, H, W) floats in [0, 1] (see `rudolph_ft.data.images.preprocess_image`); H, W multiples of 8.
            gumbel: sample each code from softmax(logits / temperature) by the Gumbel-max trick, as rudalle's
                `get_codebook_indices` does by default, instead of taking the argmax (rudalle's
                `disable_gumbel_softmax=True`). With `temperature=1` and the same random stream (default generator
                seeded alike, same device) the codes equal rudalle's.
            temperature: > 0, for Gumbel codes: < 1 sharpens, > 1 flattens the sampling distribution. (rudalle's
                hard Gumbel-softmax has a `tau`, but dividing logits + noise by it never changes the winner, so its
                codes are always those of temperature 1.)
            generator: random stream for the Gumbel noise; the default generator of the device when None.

        Returns:
            (B, h*w) int64 codes in [0, n_embed), h = H/8, w = W/8.
        """
        logits = self.encode_logits(images)  # (B, n_embed, h, w)
        if gumbel:
            return gumbel_max_codes(logits, temperature=temperature, generator=generator)
        return logits.argmax(dim=1).flatten(1)  # (B, h*w)

    # Decoding ----------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images from codebook indices (rudalle's `VQGanGumbelVAE.decode`).

        Args:
            codes: (B, n) integer codes of square grids, n = h * h, row-major.

        Returns:
            (B, 3, 8h, 8h) float32 images in [0, 1].
        """
        z = self.embed_codes(codes)  # (B, embed_dim, h, h)
        pixels = self.decoder(self.post_quant_conv(z))  # (B, 3, H, W), about [-1, 1]
        return ((pixels.float().clamp(-1.0, 1.0) + 1.0) * 0.5).contiguous()

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of a square code grid, (B, h*h) -> (B, embed_dim, h, h)."""
        if codes.ndim != 2 or codes.dtype.is_floating_point:
            raise ValueError(f"codes must be a (batch, h*w) integer tensor, got {tuple(codes.shape)} {codes.dtype}")
        side = math.isqrt(codes.shape[1])
        if side * side != codes.shape[1] or side == 0:
            raise ValueError(f"{codes.shape[1]} codes per image do not form a square grid")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise ValueError(f"codes must lie in [0, {self.num_codes}), got [{int(codes.min())}, {int(codes.max())}]")
        weight = self.quantize.embed.weight
        z = F.embedding(codes.to(weight.device), weight)  # (B, h*h, embed_dim)
        z = z.transpose(1, 2).reshape(codes.shape[0], -1, side, side)  # (B, embed_dim, h, h)
        return _like_weight(z, self.decoder.conv_in.weight)

    def _check_images(self, images: torch.Tensor) -> None:
        if not images.dtype.is_floating_point:
            raise TypeError(
                f"images must be floats in [0, 1], got {images.dtype}; convert with "
                "rudolph_ft.data.images.preprocess_image or `images.float() / 255`"
            )
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"images must be (batch, {self.config.in_channels}, H, W), got {tuple(images.shape)}")
        if images.shape[2] % self.downsampling or images.shape[3] % self.downsampling:
            raise ValueError(
                f"image height and width must be multiples of {self.downsampling}, got {tuple(images.shape[2:])}"
            )


# ----------------------------------------------------------------------------------------------------------------
# Loading and saving
# ----------------------------------------------------------------------------------------------------------------
def drop_loss_only_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` without the training-loss entries of a taming checkpoint (keys under `LOSS_ONLY_PREFIXES`)."""
    return {key: value for key, value in state_dict.items() if not key.startswith(LOSS_ONLY_PREFIXES)}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: `.safetensors`, or a pickled checkpoint read with `weights_only=True`."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as error:  # truncated (a copy or save cut short) or not a safetensors file
            raise VQGANLoadError(f"{path}: cannot read the VQGAN weights ({error}): the file is truncated or "
                                 "damaged; copy it again or re-save the model") from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused (arbitrary objects) or not a torch file at all
        raise VQGANLoadError(
            f"cannot read VQGAN weights from {path} with torch.load(weights_only=True): {exc}\n"
            "  Only tensor checkpoints are read (no arbitrary pickled objects). Re-save the state dict in a "
            "trusted environment, e.g. torch.save({'state_dict': sd}, 'vqgan.ckpt') or as .safetensors."
        ) from exc
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]  # Lightning/taming checkpoints keep the weights under this key
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise VQGANLoadError(f"{path} holds no state dict (expected a dict of tensors, or one under 'state_dict')")
    return checkpoint


def vqgan_from_state_dict(
    config: VQGANConfig, state_dict: dict[str, torch.Tensor], source: str = "state dict"
) -> VQGAN:
    """A VQGAN of `config` holding a checkpoint's weights: loss-only keys dropped, everything else loaded strictly.

    The model is built on the meta device and takes the checkpoint's tensors (as float32), so no random
    initialisation is computed and thrown away.

    Raises:
        VQGANLoadError: keys are missing, unexpected, or of the wrong shape; the message lists them.
    """
    state_dict = drop_loss_only_keys(state_dict)
    with torch.device("meta"):
        vqgan = VQGAN(config)
    expected = vqgan.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        details = [f"{name} keys: {some(keys)}" for name, keys in
                   (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)) if keys]
        raise VQGANLoadError(
            f"{source} does not fit VQGAN config {config.name or config}:\n  " + "\n  ".join(details)
            + "\n  Pass the matching `config=` (a VQGAN_PRESETS name or a VQGANConfig)."
        )
    state_dict = {key: value.to(expected[key].dtype) for key, value in state_dict.items()}
    vqgan.load_state_dict(state_dict, strict=True, assign=True)
    return vqgan


def save_vqgan(vqgan: VQGAN, directory: str | os.PathLike) -> Path:
    """Write `vqgan` to a folder (`model.safetensors` + `config.json`) that `load_vqgan(directory)` reads back.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    from ..io import atomic_write

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in vqgan.state_dict().items()}
    # atomic, as the model's weights: a kill leaves no cut file, and the file gets the user's umask (save_file's is
    # a private 0600)
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    vqgan.config.save(directory / CONFIG_NAME)
    return directory


def _resolve_config(config: VQGANConfig | str | None, default: VQGANConfig) -> VQGANConfig:
    if config is None:
        return default
    if isinstance(config, VQGANConfig):
        return config
    if config not in VQGAN_PRESETS:
        raise KeyError(f"unknown VQGAN preset {config!r}; choose one of: {', '.join(VQGAN_PRESETS)}")
    return VQGAN_PRESETS[config]


def _load_folder(path: Path):
    """A folder written by `save_vqgan`: a VQGAN, or a palette tokenizer when its config says `"kind": "palette"`."""
    values = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    state = _read_state_dict(path / WEIGHTS_NAME)
    if values.get("kind") == "palette":
        from .palette import PaletteTokenizer

        tokenizer = PaletteTokenizer(PaletteConfig.from_dict(values))
        if set(state) != {"centroids"} or state["centroids"].shape != tokenizer.centroids.shape:
            raise VQGANLoadError(f"{path} holds no palette of {tuple(tokenizer.centroids.shape)} centroids "
                                 f"(found {', '.join(f'{k} {tuple(v.shape)}' for k, v in state.items())})")
        tokenizer.load_state_dict(state)
        return tokenizer
    return vqgan_from_state_dict(VQGANConfig.from_dict(values), state, source=str(path))


def _random_vqgan(config: VQGANConfig, seed: int) -> VQGAN:
    """A VQGAN with PyTorch's default initialisation drawn from `seed`, leaving the global random state alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VQGAN(config)


def load_vqgan(
    name_or_path: str | os.PathLike = "sber-gumbel-f8",
    *,
    config: VQGANConfig | str | None = None,
    seed: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> VQGAN:
    """A ready-to-use (eval mode, frozen) VQGAN image tokenizer.

    `name_or_path` is one of:
    - a preset name of `VQGAN_PRESETS` with hub weights (`"sber-gumbel-f8"`): the official checkpoint from the
      Hugging Face cache, downloaded unless offline (`offline=True` or `HF_HUB_OFFLINE=1`, then a clear error);
    - a preset without weights (`"tiny"`): random weights drawn from `seed` (default 0), for tests and demos;
    - `"palette"`: the colour-palette tokenizer (`rudolph_ft.model.palette.PaletteTokenizer`, unfitted: plain colours);
    - a folder written by `save_vqgan` (`config.json` + `model.safetensors`): a VQGAN or a fitted palette tokenizer;
    - a local weights file: the official `.ckpt` (or any torch file with a state dict, under `state_dict` or
      not, read with `weights_only=True`) or a `.safetensors` file, built with `config` (default: the official
      architecture).

    Loss-only keys (`LOSS_ONLY_PREFIXES`) of a training checkpoint are dropped; all other keys must fit exactly.

    Args:
        name_or_path: preset name, folder or file.
        config: architecture of a weights file (preset name or `VQGANConfig`); only for files.
        seed: random-weight seed, only for presets without weights.
        cache_dir: Hugging Face cache folder for hub downloads.
        offline: forbid downloads (default: from `HF_HUB_OFFLINE`).
        device: where to put the model.
        dtype: parameter dtype (e.g. `torch.bfloat16` on a GPU); default float32.
    """
    name = os.fspath(name_or_path)
    preset = VQGAN_PRESETS.get(name)
    path = Path(name).expanduser()
    if seed is not None and (preset is None or preset.hub is not None):
        raise ValueError(f"seed= draws random weights and applies only to presets without weights, not {name!r}")
    if config is not None and (preset is not None or path.is_dir()):
        raise ValueError(f"config= applies only to a weights file; {name!r} brings its own architecture")
    if isinstance(preset, PaletteConfig):
        from .palette import PaletteTokenizer

        vqgan = PaletteTokenizer(preset)
    elif preset is not None and preset.hub is None:
        vqgan = _random_vqgan(preset, 0 if seed is None else seed)
    elif preset is not None:
        file = resolve_file(preset.hub, cache_dir=cache_dir, offline=offline, what="VQGAN weights")
        vqgan = vqgan_from_state_dict(preset, _read_state_dict(file), source=str(file))
    elif path.is_dir():
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{path} is no saved VQGAN folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
        vqgan = _load_folder(path)
    elif path.is_file():
        config = _resolve_config(config, VQGAN_PRESETS["sber-gumbel-f8"])
        vqgan = vqgan_from_state_dict(config, _read_state_dict(path), source=str(path))
    else:
        raise FileNotFoundError(
            f"{name!r} is neither a VQGAN preset ({', '.join(VQGAN_PRESETS)}) nor an existing file or folder"
        )
    return vqgan.to(device=device, dtype=dtype).eval().requires_grad_(False)


#: rudalle's name for the image tokenizer.
load_vae = load_vqgan
