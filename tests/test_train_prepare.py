"""Run preparation: images encoded in batches on the training device, and once per run, not once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_train import small_data, tiny_config  # noqa: F401 (small_data is a fixture)
from torch import nn

from rudolph_ft.model.vqgan import VQGAN, load_vqgan
from rudolph_ft.train.prepare import _dihedral_views, _shifts, fit_kmeans_quantizer, prepare_run, shift_image

# the same settings run in one process here and in the two-process launch; each run gets its own empty code cache
PATHS = {"gumbel": ("vqgan.views=2",), "dihedral": ("vqgan.augment=dihedral", "vqgan.views=3")}


def _config(data: Path, root: Path, path: str, *extra: str):
    return tiny_config(data, root / path, f"data.cache_dir={root / path}-codes", *PATHS[path], *extra)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_encoding_is_batched_in_inference_mode_on_the_device(small_data, tmp_path, monkeypatch, path):  # noqa: F811
    """A (pretend) CUDA accelerator: the encoder alone goes there and comes back, encoding in batches of the size
    asked for (not the device's default, 64), under inference mode; the codes are the plain CPU run's."""
    calls, moves = [], []
    encode_logits, module_to = VQGAN.encode_logits, nn.Module.to

    def recording_encode(self, images):
        calls.append((images.shape[0], torch.is_inference_mode_enabled()))
        return encode_logits(self, images)

    def recording_to(self, *args, **kwargs):
        device = args[0] if args else kwargs.get("device")
        if isinstance(device, (str, torch.device)) and torch.device(device).type in ("cuda", "cpu"):
            moves.append((type(self).__name__, torch.device(device).type))
            if torch.device(device).type == "cuda":
                return self  # recorded, not done: this torch may have no CUDA
        return module_to(self, *args, **kwargs)

    monkeypatch.setattr(VQGAN, "encode_logits", recording_encode)
    plain = prepare_run(_config(small_data, tmp_path / "cpu", path), tmp_path / "cpu" / path, None, echo=lambda m: None)
    assert max(size for size, _ in calls) == 16  # the CPU default
    calls.clear()
    monkeypatch.setattr(nn.Module, "to", recording_to)
    accelerator = SimpleNamespace(device=torch.device("cuda"), num_processes=1, is_main_process=True)
    prepared = prepare_run(_config(small_data, tmp_path, path), tmp_path / path, None, echo=lambda m: None,
                           accelerator=accelerator, encode_batch_size=16)
    images = len(prepared.train) + len(prepared.val)
    sizes = [size for size, _ in calls]
    assert all(inference for _, inference in calls) and max(sizes) == 16
    assert len([size for size in sizes if size != 16]) <= (6 if path == "dihedral" else 2)  # a last batch per split
    # dihedral: every view of every photo; gumbel: each distinct photo once, all its views from one pass
    assert sum(sizes) == 3 * images if path == "dihedral" else sum(sizes) <= images
    to_cuda = [name for name, device in moves if device == "cuda"]
    assert sorted(to_cuda) == ["Conv2d", "Conv2d", "Encoder"]  # quant_conv, quantize.proj, encoder: no decoder
    assert sorted(name for name, device in moves[-3:] if device == "cpu") == ["Conv2d", "Conv2d", "Encoder"]
    for split in ("train", "val"):
        mine, theirs = getattr(prepared, split).codes, getattr(plain, split).codes
        assert mine.device.type == "cpu" and mine.dtype == torch.long and not mine.is_inference()
        assert torch.equal(mine, theirs)  # the same batching on the same CPU: bitwise


def test_shift_views_move_the_photo_and_keep_the_first_eight_plain():
    images = torch.rand(3, 3, 32, 32)
    moved = shift_image(images, 2, -3)
    assert torch.equal(moved[..., 2:, :-3], images[..., :-2, 3:])  # content moved down 2, left 3; edges repeated
    shifts = _shifts(3, 12, seed=0, most=4)
    assert shifts[:, :8].abs().sum() == 0 and shifts[:, 8:].abs().max() <= 4 and shifts[:, 8:].abs().sum() > 0
    vqgan = load_vqgan("tiny", seed=0)
    codes = _dihedral_views(vqgan, torch.rand(3, 3, 64, 64), 12, shifts)  # (B, views, h*w)
    assert codes.shape == (3, 12, 64) and not torch.equal(codes[:, 0], codes[:, 8])


def test_kmeans_fit_makes_the_codes_nearest_centroids_and_uses_more_of_the_codebook():
    photos = torch.rand(8, 3, 64, 64)
    photos[:4] *= torch.tensor([1.0, 0.3, 0.2])[:, None, None]  # two colour families
    vqgan = load_vqgan("tiny", seed=0)
    before = vqgan.encode(photos).unique().numel()
    fit_kmeans_quantizer(vqgan, photos, iterations=5)
    with torch.inference_mode():
        features = vqgan.quant_conv(vqgan.encoder(photos * 2 - 1)).permute(0, 2, 3, 1).reshape(-1, 16)
    centroids = vqgan.quantize.proj.weight[:, :, 0, 0]
    nearest = torch.cdist(features, centroids).argmin(1)
    assert torch.equal(vqgan.encode(photos).flatten(), nearest)
    assert vqgan.encode(photos).unique().numel() > before


def test_kmeans_fit_of_fewer_cells_than_codes():
    """4 photos of 8x8 cells are 256 features for 512 codes: every feature starts a centroid, the rest repeat them."""
    vqgan = load_vqgan("tiny", seed=0)
    photos = torch.rand(4, 3, 64, 64)
    fit_kmeans_quantizer(vqgan, photos, iterations=3)
    assert torch.isfinite(vqgan.quantize.proj.weight).all()
    assert vqgan.encode(photos).unique().numel() > 64


def test_batch_size_must_be_positive(small_data, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="encode_batch_size"):
        prepare_run(_config(small_data, tmp_path, "gumbel"), tmp_path / "run", None, encode_batch_size=0)


def test_a_single_task_run_learns_its_tokenizer_from_the_training_captions_alone(small_data, tmp_path):  # noqa: F811
    """tokenizer.name: null without tasks.path: RUN/bpe.model is, byte for byte, the BPE `train_tokenizer` learns
    from the training split's captions (what every single-task run learned before multitask runs added task
    texts), and its settings name no task texts."""
    from rudolph_ft.tokenizer import train_tokenizer
    from rudolph_ft.train.prepare import run_dataset

    config = _config(small_data, tmp_path, "dihedral")
    prepare_run(config, tmp_path / "dihedral", None, echo=lambda m: None)
    train, _ = run_dataset(config.data, 64).split()
    train_tokenizer(train.captions, 200, tmp_path / "expected.model")
    assert (tmp_path / "dihedral" / "bpe.model").read_bytes() == (tmp_path / "expected.model").read_bytes()
    settings = json.loads((tmp_path / "dihedral" / "bpe.settings.json").read_text(encoding="utf-8"))
    assert sorted(settings) == ["captions", "captions_sha256", "data_path", "split_seed", "train_vocab_size",
                                "val_fraction"]


# Launched by torchrun: prepares each run named on the command line, counting per process what it encodes, checks
# and learns, and writes what it ended with to rank<N>.json.
_SCRIPT = '''
import hashlib, json, sys
from pathlib import Path

import torch
from accelerate import Accelerator

import rudolph_ft.tokenizer
import rudolph_ft.train.prepare as prepare
from rudolph_ft.model.vqgan import VQGAN, load_vqgan
from rudolph_ft.train.config import load_train_config

counts = {"encoded": 0, "checked": 0, "learned": 0}


def counting(name, function):
    def wrapper(*args, **kwargs):
        counts[name] += args[1].shape[0] if name == "encoded" else 1
        return function(*args, **kwargs)
    return wrapper


VQGAN.encode_logits = counting("encoded", VQGAN.encode_logits)
prepare.run_dataset = counting("checked", prepare.run_dataset)
rudolph_ft.tokenizer.train_tokenizer = counting("learned", rudolph_ft.tokenizer.train_tokenizer)
accelerator = Accelerator(cpu=True)
out = {}
for name in sys.argv[2:]:
    config = load_train_config(Path(sys.argv[1]) / f"{name}.yaml")
    for key in counts:
        counts[key] = 0
    try:
        prepared = prepare.prepare_run(config, Path(config.output_dir), None, accelerator=accelerator)
    except (ValueError, RuntimeError) as error:
        out[name] = {"error": f"{type(error).__name__}: {error}"}
        continue
    codes = torch.cat([prepared.train.codes.flatten(), prepared.val.codes.flatten()])
    tokenizer = prepared.components.tokenizer
    out[name] = {**counts, "codes": hashlib.sha256(codes.numpy().tobytes()).hexdigest(),
                 "vocab": tokenizer.vocab(), "ids": tokenizer.encode(prepared.train.captions + prepared.val.captions),
                 "rows": len(prepared.train) + len(prepared.val), "meta": prepared.val.meta}
(Path(sys.argv[1]) / f"rank{accelerator.process_index}.json").write_text(json.dumps(out))
accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()  # an exit with the gloo group alive may abort ("terminate called ...")
'''


def test_two_processes_prepare_once(small_data, tmp_path):  # noqa: F811
    """torchrun, 2 CPU processes: the main process checks the data, learns the tokenizer and encodes each image view
    once; the other one checks, learns and encodes nothing, and ends with the same codes and tokenizer. When the main
    process fails, the other one fails too (no hang), naming the error."""
    import hashlib

    for path in PATHS:
        _config(small_data, tmp_path, path).save(tmp_path / f"{path}.yaml")
    broken = tmp_path / "broken-data"  # no image there: the main process fails its data check
    broken.mkdir()
    (broken / "data.csv").write_text("index,belok,fats,uglevod,kkal,name,path\n0,1,2,3,4,borscht,images/gone.jpg\n")
    tiny_config(broken, tmp_path / "broken").save(tmp_path / "broken.yaml")
    (tmp_path / "prepare.py").write_text(_SCRIPT, encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "prepare.py"), str(tmp_path), "broken", *PATHS]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=Path(__file__).parents[1], timeout=900)  # a hang guard only
    assert done.returncode == 0, done.stderr[-3000:]
    main, other = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    # a failing main process fails the other one too, saying so, instead of leaving it waiting for the data
    assert main["broken"]["error"].startswith("ValueError") and "no usable rows" in main["broken"]["error"]
    assert other["broken"]["error"].startswith("RuntimeError: the main process could not prepare the run (ValueError")
    for path in PATHS:
        # the same preparation in one process, with its own empty cache: what the main process must have done
        alone = prepare_run(_config(small_data, tmp_path / "one", path), tmp_path / "one" / path, None,
                            echo=lambda m: None)
        codes = torch.cat([alone.train.codes.flatten(), alone.val.codes.flatten()])
        rows = len(alone.train) + len(alone.val)
        assert main[path]["codes"] == other[path]["codes"] == hashlib.sha256(codes.numpy().tobytes()).hexdigest()
        assert main[path]["vocab"] == other[path]["vocab"] == alone.components.tokenizer.vocab()
        assert main[path]["ids"] == other[path]["ids"] and main[path]["meta"] == other[path]["meta"]
        assert main[path]["rows"] == other[path]["rows"] == rows
        assert (main[path]["checked"], main[path]["learned"]) == (1, 1)
        assert (other[path]["checked"], other[path]["learned"], other[path]["encoded"]) == (0, 0, 0)
        distinct = len({m["image_sha256"] for m in alone.train.meta + alone.val.meta})
        assert main[path]["encoded"] == (distinct if path == "gumbel" else 3 * rows)  # each image view once
        assert (tmp_path / path / "bpe.model").is_file() and (tmp_path / path / "bpe.settings.json").is_file()
