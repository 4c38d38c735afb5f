"""Expected VQGAN outputs from the reference implementation (rudalle 1.1.3), for `tests/test_vqgan.py`.

Run with the reference env's python (`scripts/make-reference-env.sh`), from the repository root:

    /work/.venv-ref/bin/python scripts/make_vqgan_fixtures.py            # rewrites tests/assets/vqgan/ fixtures
    /work/.venv-ref/bin/python scripts/make_vqgan_fixtures.py --live DIR  # full-size get_vae(), for the live test

Default mode writes the key -> shape list of the full-size `get_vae(pretrained=False).model` (to a .json file)
and builds rudalle's `VQGanGumbelVAE` on the `tiny` VQGAN preset with the seeded weights of
`tests/assets/vqgan/weights_fn.py`; for real photos (`tests/assets/images/`) and synthetic images it stores
(tiny_parity.safetensors) argmax codes (`get_codebook_indices(img, disable_gumbel_softmax=True)`), rudalle's default
Gumbel-sampled codes after `torch.manual_seed(GUMBEL_SEED)`, the top-2 logit margins of each cell, and `vae.decode`
of the argmax codes (64 px only).

`--live DIR` builds the full-size `get_vae(pretrained=False)`, fills it with the same seeded weights, and writes
`DIR/vqgan.ckpt` (its `vae.model` state dict under `state_dict`, with loss entries as a taming training checkpoint
has them) and `DIR/reference.safetensors` (16 images at 128 px with the same outputs).

Nothing here imports rudolph_ft as a package: its dependency-free modules (`config.py`, `data/images.py`) and the
weights helper are loaded by file path, so the reference env needs no install of this project.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
FIXTURE = ASSETS / "vqgan" / "tiny_parity.safetensors"
SHAPES = ASSETS / "vqgan" / "sber_gumbel_f8_shapes.json"  # rudalle `vae.model.state_dict()` key -> shape
WEIGHT_SEED = 0
GUMBEL_SEED = 1234


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


weights_fn = _module("vqgan_weights_fn", ASSETS / "vqgan" / "weights_fn.py")


def photo_paths() -> list[Path]:
    return sorted((ASSETS / "images").glob("*.jpg"))


def photos(size: int) -> torch.Tensor:
    """The test photos through the project's own preprocessing, (N, 3, size, size) uint8."""
    from PIL import Image

    images = _module("rudolph_images", ROOT / "rudolph_ft" / "data" / "images.py")
    batch = [images.preprocess_image(Image.open(path), size) for path in photo_paths()]
    return torch.stack(batch).mul(255).round().to(torch.uint8)


def synthetic(size: int, count: int) -> torch.Tensor:
    """`count` deterministic synthetic images, (count, 3, size, size) uint8: gradients, checkers, noise, flats."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rng = np.random.default_rng(7)
    radius = np.hypot(x - 0.5, y - 0.5)
    patterns = [
        np.stack([x, y, 1 - x]),  # colour gradients
        np.stack([y, 1 - y, x * y]),
        np.broadcast_to(((np.floor(x * 8) + np.floor(y * 8)) % 2), (3, size, size)),  # checkerboard
        np.stack([(np.floor(x * 16) + np.floor(y * 16)) % 2, np.floor(y * 4) % 2, np.floor(x * 4) % 2]),
        rng.random((3, size, size)),  # white noise
        np.kron(rng.random((3, size // 8, size // 8)), np.ones((1, 8, 8))),  # blocky noise
        np.zeros((3, size, size)),  # black
        np.ones((3, size, size)),  # white
        np.stack([0.5 + 0.5 * np.sin(radius * 40), 0.5 + 0.5 * np.cos(radius * 25), radius]),  # rings
        np.broadcast_to((np.floor((x + y) * 10) % 2) * 0.8 + 0.1, (3, size, size)),  # diagonal stripes
    ]
    array = np.stack(patterns[:count]).clip(0, 1)
    return torch.from_numpy(np.round(array * 255).astype(np.uint8))


def reference_vae(preset: str):
    """rudalle's VQGanGumbelVAE for a VQGAN preset of rudolph_ft/config.py, with the seeded weights."""
    from omegaconf import OmegaConf
    from rudalle.vae import get_vae
    from rudalle.vae.model import VQGanGumbelVAE

    if preset == "sber-gumbel-f8":
        vae = get_vae(pretrained=False)
    else:
        config = _module("rudolph_config", ROOT / "rudolph_ft" / "config.py").VQGAN_PRESETS[preset]
        yml = OmegaConf.load(Path(sys.modules["rudalle.vae"].__file__).parent / "vqgan.gumbelf8-sber.config.yml")
        params = yml.model.params
        params.n_embed, params.embed_dim = config.n_embed, config.embed_dim
        for key in ("ch", "num_res_blocks", "z_channels", "resolution", "in_channels", "out_ch", "dropout"):
            params.ddconfig[key] = getattr(config, key)
        params.ddconfig.ch_mult, params.ddconfig.attn_resolutions = list(config.ch_mult), list(config.attn_resolutions)
        vae = VQGanGumbelVAE(yml)
    shapes = {key: value.shape for key, value in vae.model.state_dict().items()}
    vae.model.load_state_dict(weights_fn.seeded_state_dict(shapes, WEIGHT_SEED), strict=True)
    return vae.eval()


@torch.no_grad()
def reference_outputs(vae, images_u8: torch.Tensor, decode: bool) -> dict[str, torch.Tensor]:
    """Codes (argmax and seeded Gumbel), argmax logit margins and optionally decodes of uint8 images."""
    images = images_u8.float() / 255.0
    codes = vae.get_codebook_indices(images, disable_gumbel_softmax=True)  # (B, h*w)
    torch.manual_seed(GUMBEL_SEED)
    gumbel_codes = vae.get_codebook_indices(images)  # rudalle's default: hard Gumbel-softmax sample
    model = vae.model
    logits = model.quantize.proj(model.quant_conv(model.encoder(2 * images - 1)))  # (B, n_embed, h, w)
    top2 = logits.flatten(2).topk(2, dim=1).values  # (B, 2, h*w)
    out = {"images": images_u8, "codes": codes, "gumbel_codes": gumbel_codes, "margins": top2[:, 0] - top2[:, 1]}
    if decode:
        out["decoded"] = vae.decode(codes).contiguous()  # (B, 3, H, W) in [0, 1]
    return out


def _summary(name: str, out: dict[str, torch.Tensor]) -> str:
    codes, same = out["codes"], (out["gumbel_codes"] == out["codes"]).float().mean()
    return (f"{name}: {tuple(out['images'].shape)} images, {codes.unique().numel()} distinct codes, "
            f"min margin {out['margins'].min().item():.3g}, gumbel == argmax {same:.2f}")


def _metadata(preset: str) -> dict[str, str]:
    """How the outputs were made, as one JSON string (a single key keeps the file's bytes stable)."""
    import rudalle

    info = {"preset": preset, "weight_seed": WEIGHT_SEED, "gumbel_seed": GUMBEL_SEED, "rudalle": rudalle.__version__,
            "torch": torch.__version__, "photos": ",".join(path.name for path in photo_paths())}
    return {"info": json.dumps(info, sort_keys=True)}


def make_fixture() -> None:
    from safetensors.torch import save_file

    full = reference_vae("sber-gumbel-f8").model.state_dict()
    lines = [f"  {json.dumps(key)}: {json.dumps(list(value.shape))}" for key, value in full.items()]
    SHAPES.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {SHAPES.relative_to(ROOT)} ({len(full)} keys)")
    vae = reference_vae("tiny")
    small = torch.cat([photos(64), synthetic(64, 10)])  # 16 images
    large = torch.cat([photos(128), synthetic(128, 10)[[0, 2, 4, 8]]])  # 10 images, codes only
    tensors = {}
    for name, images, decode in (("64", small, True), ("128", large, False)):
        out = reference_outputs(vae, images, decode)
        print(_summary(f"{name} px", out))
        tensors.update({f"{key}_{name}": value.contiguous() for key, value in out.items()})
    save_file(tensors, FIXTURE, metadata=_metadata("tiny"))
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size / 1e6:.2f} MB)")


def make_live(directory: Path, size: int = 128, count: int = 16) -> None:
    from safetensors.torch import save_file

    vae = reference_vae("sber-gumbel-f8")
    images = torch.cat([photos(size), synthetic(size, count - len(photo_paths()))])
    out = reference_outputs(vae, images, decode=True)
    print(_summary(f"full-size {size} px", out))
    directory.mkdir(parents=True, exist_ok=True)
    state = dict(vae.model.state_dict())
    # what a taming training checkpoint carries beside the model: loss modules (LPIPS, discriminator, logvar)
    state["loss.logvar"] = torch.zeros(())
    state["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    state["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    torch.save({"state_dict": state, "global_step": 0}, directory / "vqgan.ckpt")
    save_file({key: value.contiguous() for key, value in out.items()}, directory / "reference.safetensors",
              metadata=_metadata("sber-gumbel-f8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", type=Path, metavar="DIR", help="full-size reference run into DIR (live test)")
    args = parser.parse_args()
    make_live(args.live) if args.live else make_fixture()


if __name__ == "__main__":
    main()
