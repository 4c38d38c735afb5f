"""Model and image-tokenizer configurations and the named presets (importable without torch).

Presets carry their hub location next to their architecture, so `load_model("350M")` knows both what to
build and where the matching weights live (values: RECIPE §2, reference `rudolph.MODELS`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RuDolphConfig",
    "VQGANConfig",
    "HubFile",
    "MODEL_PRESETS",
    "VQGAN_PRESETS",
    "PaletteConfig",
    "TOKENIZER_FILES",
]


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face hub repository."""

    repo_id: str
    filename: str


class _JsonConfig:
    """Shared (de)serialisation for the frozen config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    def replace(self, **overrides):
        return self.from_dict({**self.to_dict(), **overrides})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class RuDolphConfig(_JsonConfig):
    """Architecture of a RuDOLPH model; field names follow the reference `ruDolphModel` arguments.

    `vocab_size` is the text vocabulary *without* special tokens (the reference adds `text_special_tokens`);
    the joint output vocabulary is `text_vocab_size + image_vocab_total` (text first, then image).
    """

    num_layers: int = 24
    hidden_size: int = 1024
    num_attention_heads: int = 16
    l_text_seq_length: int = 64
    image_tokens_per_dim: int = 16
    r_text_seq_length: int = 64
    kernel_size: int = 7
    last_kernel_size: int = 9
    text_special_tokens: int = 384
    image_special_tokens: int = 384
    vocab_size: int = 16384 + 64
    image_vocab_size: int = 8192
    embedding_dropout_prob: float = 0.1  # kept for fidelity: the reference defines but never applies it
    attention_dropout_prob: float = 0.1
    output_dropout_prob: float = 0.1
    cogview_sandwich_layernorm: bool = True
    cogview_pb_relax: bool = True
    layernorm_epsilon: float = 1e-5
    # rudolph rc4 masks (and the paper): right text cannot attend to the left text; rc10 builds plain causal
    # rows there. Official checkpoints store their masks: loading one sets this field from them.
    r_text_sees_l_text: bool = False
    gradient_checkpointing: bool = False
    hub: HubFile | None = field(default=None, compare=False)
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if isinstance(self.hub, dict):
            object.__setattr__(self, "hub", HubFile(**self.hub))
        for key in ("num_layers", "l_text_seq_length", "image_tokens_per_dim", "r_text_seq_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")

    # Derived sizes -----------------------------------------------------------------------------------------
    @property
    def image_seq_length(self) -> int:
        return self.image_tokens_per_dim**2

    @property
    def total_seq_length(self) -> int:
        return self.l_text_seq_length + self.image_seq_length + self.r_text_seq_length

    @property
    def text_vocab_size(self) -> int:
        """Rows of the text embedding / text part of the output layer (incl. special tokens)."""
        return self.vocab_size + self.text_special_tokens

    @property
    def image_vocab_total(self) -> int:
        return self.image_vocab_size + self.image_special_tokens

    @property
    def total_vocab_size(self) -> int:
        return self.text_vocab_size + self.image_vocab_total

    @property
    def image_size(self) -> int:
        """Pixel size of the square input image (VQGAN downsampling factor 8)."""
        return self.image_tokens_per_dim * 8

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> RuDolphConfig:
        """The config of a named preset (see `MODEL_PRESETS`), with fields overridden."""
        if name not in MODEL_PRESETS:
            raise KeyError(f"unknown model preset {name!r}; choose one of: {', '.join(MODEL_PRESETS)}")
        return MODEL_PRESETS[name].replace(**overrides) if overrides else MODEL_PRESETS[name]


def _reference_preset(name, layers, hidden, heads, l_text, per_dim, r_text, kernel, last_kernel, special, repo):
    text_special, image_special = special
    return RuDolphConfig(
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, l_text_seq_length=l_text,
        image_tokens_per_dim=per_dim, r_text_seq_length=r_text, kernel_size=kernel, last_kernel_size=last_kernel,
        text_special_tokens=text_special, image_special_tokens=image_special, vocab_size=16384 + l_text,
        hub=HubFile(repo, "pytorch_model.bin"), name=name,
    )


MODEL_PRESETS: dict[str, RuDolphConfig] = {
    # name: layers, hidden, heads, l_text, image/dim, r_text, kernel, last kernel, special (text, image), hub repo
    "350M": _reference_preset("350M", 24, 1024, 16, 64, 16, 64, 7, 9, (384, 384), "shonenkov-AI/RuDOLPH-350M-v2"),
    "350M_v1": _reference_preset("350M_v1", 24, 1024, 16, 64, 16, 64, 7, 9, (0, 0), "sberbank-ai/RuDOLPH-350M"),
    "1.3B": _reference_preset("1.3B", 24, 2048, 16, 128, 32, 128, 9, 11, (2048, 64), "sberbank-ai/RUDOLPH-1.3B"),
    "2.7B": _reference_preset("2.7B", 32, 2560, 32, 384, 24, 128, 7, 9, (1024, 1024), "sberbank-ai/RUDOLPH-2.7B"),
    "2.7B_fbc2": _reference_preset(
        "2.7B_fbc2", 32, 2560, 32, 384, 24, 128, 7, 9, (1024, 1024), "sberbank-ai/RUDOLPH-2.7B-FBC2"
    ),
    # Tiny presets (random init) for tests and the demo: the real 64 / 16x16 / 64 layout at a small width,
    # and a small layout for fast CPU training of the demo.
    "tiny": RuDolphConfig(
        num_layers=6, hidden_size=64, num_attention_heads=4, l_text_seq_length=64, image_tokens_per_dim=16,
        r_text_seq_length=64, text_special_tokens=384, image_special_tokens=384, vocab_size=1000 + 64,
        image_vocab_size=1024, name="tiny",
    ),
    "demo": RuDolphConfig(
        num_layers=6, hidden_size=256, num_attention_heads=8, l_text_seq_length=8, image_tokens_per_dim=8,
        r_text_seq_length=48, kernel_size=3, last_kernel_size=5, text_special_tokens=0, image_special_tokens=0,
        vocab_size=1000 + 8, image_vocab_size=512, attention_dropout_prob=0.0, output_dropout_prob=0.0,
        name="demo",
    ),
}


@dataclass(frozen=True)
class VQGANConfig(_JsonConfig):
    """ruDALL-E's Gumbel VQGAN (taming-transformers `Encoder`/`Decoder`), downsampling 2**(len(ch_mult)-1)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 8192
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    hub: HubFile | None = field(default=None, compare=False)
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.hub, dict):
            object.__setattr__(self, "hub", HubFile(**self.hub))

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class PaletteConfig(_JsonConfig):
    """A palette tokenizer: `n_embed` codes of `downsampling` px patches described by `cells` x `cells` mean colours.

    `kind` tells a saved folder's `config.json` from a VQGAN's (see `rudolph_ft.model.vqgan.load_vqgan`).
    """

    n_embed: int = 512
    cells: int = 2
    downsampling: int = 8
    kind: str = "palette"
    name: str | None = field(default=None, compare=False)

    @property
    def hub(self) -> None:
        """No weights to download: the palette is fitted to the training photos (`vqgan.fit=kmeans`)."""
        return None

    def __post_init__(self) -> None:
        if self.kind != "palette":
            raise ValueError(f"a PaletteConfig has kind 'palette', not {self.kind!r}")
        if self.n_embed < 1 or self.cells < 1 or self.downsampling % self.cells:
            raise ValueError(f"palette tokenizer: n_embed >= 1, cells >= 1 and downsampling ({self.downsampling}) a "
                             f"multiple of cells ({self.cells}), got n_embed={self.n_embed}, cells={self.cells}")

    @property
    def feature_size(self) -> int:
        """Numbers describing a patch: 3 colours x cells x cells."""
        return 3 * self.cells * self.cells


VQGAN_PRESETS: dict[str, VQGANConfig | PaletteConfig] = {
    "sber-gumbel-f8": VQGANConfig(
        hub=HubFile("shonenkov/rudalle-utils", "vqgan.gumbelf8-sber.model.ckpt"), name="sber-gumbel-f8"
    ),
    # Tiny random-weight VQGAN for tests and the demo (still downsampling 8). Every width is a multiple of 32:
    # the taming blocks normalise with GroupNorm(32 groups).
    "tiny": VQGANConfig(
        ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=16, embed_dim=16,
        n_embed=512, resolution=64, name="tiny",
    ),
    # Colour-palette tokenizer for from-scratch demos (`rudolph_ft.model.palette`): 8x8 patches -> 512 colour
    # patterns of 2x2 sub-squares, fitted by k-means to the training photos (vqgan.fit=kmeans).
    "palette": PaletteConfig(name="palette"),
}

#: Official tokenizer file (YouTokenToMe BPE, 16384 ids).
TOKENIZER_FILES: dict[str, HubFile] = {"rudalle": HubFile("shonenkov/rudalle-utils", "bpe.model")}
