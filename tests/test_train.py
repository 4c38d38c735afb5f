"""The trainer on a tiny model and a slice of the demo data: resume is bitwise, failures are clear and safe."""

import json
import shutil
from pathlib import Path

import pytest

from rudolph_ft.train.checkpoint import latest_checkpoint, save_checkpoint
from rudolph_ft.train.config import ConfigError, TrainConfig, load_train_config
from rudolph_ft.train.loop import Trainer, TrainingStopped

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """40 rows of the committed demo dataset."""
    out = tmp_path_factory.mktemp("data")
    lines = (ROOT / "data" / "demo" / "data.csv").read_text(encoding="utf-8").splitlines()
    (out / "data.csv").write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    shutil.copytree(ROOT / "data" / "demo" / "images", out / "images")
    return out


def tiny_config(data_dir: Path, run_dir: Path, *extra: str) -> TrainConfig:
    overrides = [
        f"output_dir={run_dir}", "model.name=demo", "model.pretrained=false",
        "model.overrides={num_layers: 2, hidden_size: 32, num_attention_heads: 2, attention_dropout_prob: 0.1,"
        " output_dropout_prob: 0.1}",
        "tokenizer.name=null", "tokenizer.train_vocab_size=200", "vqgan.name=tiny", "vqgan.seed=0",
        f"data.path={data_dir}", "data.val_fraction=0.2", "optim.lr=3e-3", "train.epochs=3", "train.batch_size=8",
        "checkpoint.every=2", "checkpoint.keep=2", "eval.every=0", "eval.final=false", "logging.progress=false",
        *extra,
    ]
    return load_train_config(None, overrides)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.mark.parametrize("optimizer", ["adam8bit", "adamw"])
def test_resume_continues_the_loss_curve_bitwise(small_data, tmp_path, optimizer):
    """Dropout on, BPE dropout on, two image views: an interrupted + resumed run equals an uninterrupted one."""
    extra = (f"optim.name={optimizer}", "tokenizer.bpe_dropout=0.1", "vqgan.views=2")
    Trainer(tiny_config(small_data, tmp_path / "full", *extra), echo=lambda m: None).run()

    def stop_at_three(trainer, metrics):
        if metrics["step"] == 3:
            trainer.request_stop("test interruption")

    stopped = Trainer(tiny_config(small_data, tmp_path / "cut", *extra), on_step=stop_at_three,
                      echo=lambda m: None).run()
    assert stopped["stopped"] == "test interruption" and stopped["steps"] == 3
    assert latest_checkpoint(tmp_path / "cut").name == "step-3"
    Trainer(tiny_config(small_data, tmp_path / "cut", *extra), resume=True, echo=lambda m: None).run()
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert len(full) == 12 and [s for s, _ in resumed] == list(range(1, 13))
    assert resumed == full  # exact float equality, step by step
    assert full[-1][1] < full[0][1]  # and it learns


def test_run_directory_contents_and_reloadable_model(small_data, tmp_path):
    from rudolph_ft.components import load_components

    result = Trainer(tiny_config(small_data, tmp_path / "run", "train.epochs=1"), echo=lambda m: None).run()
    run = tmp_path / "run"
    assert result["steps"] == 4
    for name in ("metrics.jsonl", "metrics.csv", "loss_curve.png", "bpe.model", "final/model.safetensors",
                 "final/run_config.yaml", "final/vqgan/config.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-2", "step-4"]
    loaded = load_components(run)  # a run directory is what inference accepts
    assert loaded.model.config.num_layers == 2
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config(small_data, run), echo=lambda m: None).run()


def test_non_finite_loss_stops_with_the_step_or_is_skipped(small_data, tmp_path, monkeypatch):
    from rudolph_ft.model.rudolph import RuDolph

    original = RuDolph._segment_losses
    calls = {"n": 0}

    def poisoned(self, output, *args):
        original(self, output, *args)
        calls["n"] += 1
        if calls["n"] == 2:
            output.image_loss = output.image_loss * float("nan")

    monkeypatch.setattr(RuDolph, "_segment_losses", poisoned)
    with pytest.raises(TrainingStopped, match=r"step 2: loss is nan \(non-finite: image_loss\)"):
        Trainer(tiny_config(small_data, tmp_path / "a", "train.epochs=1"), echo=lambda m: None).run()
    calls["n"] = 0
    messages = []
    result = Trainer(tiny_config(small_data, tmp_path / "b", "train.epochs=1", "train.nan_policy=skip"),
                     echo=messages.append).run()
    assert result["steps"] == 4 and any("step skipped" in m for m in messages)


def test_checkpoint_save_is_atomic(tmp_path):
    def good(directory):
        (directory / "model.safetensors").write_bytes(b"ok")

    save_checkpoint(tmp_path, 1, good, {"progress": {}}, keep=3)

    def crash(directory):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, crash, {"progress": {}}, keep=3)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]
    assert (tmp_path / "checkpoints" / "step-1" / "model.safetensors").read_bytes() == b"ok"
    for step in (2, 3, 4):
        save_checkpoint(tmp_path, step, good, {"progress": {}}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3", "step-4"]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*epoch"):
        load_train_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_train_config(None, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_train_config(None, ["train.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(bad)
    defaults = TrainConfig()  # the article's recipe
    assert (defaults.train.epochs, defaults.train.batch_size, defaults.optim.lr) == (5, 10, 2e-5)
    assert defaults.optim.name == "adam8bit" and defaults.schedule.final_div_factor == 500
    assert defaults.train.loss_weights == (0.01, 1.0, 7.0) and defaults.train.max_grad_norm == 1.0
    assert defaults.checkpoint.every == 500


def test_shipped_configs_validate():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"demo.yaml", "borscht-350m.yaml"}
    for path in configs:
        config = load_train_config(path)
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line.startswith("# rudolph-ft train"), f"{path.name}: header must be the command to run it"
        assert config.output_dir.startswith("runs/")




def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(small_data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    config = tiny_config(small_data, tmp_path / "run", "train.epochs=50", "checkpoint.every=0")
    config.save(tmp_path / "cfg.yaml")
    process = subprocess.Popen([sys.executable, "-m", "rudolph_ft", "train", str(tmp_path / "cfg.yaml")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []  # drained as it comes, so a full pipe never blocks the run
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    # Waits on events (two steps logged, then the exit), never on a time: the guard only ends a hung run
    hang_guard = threading.Timer(1800, process.kill)
    hang_guard.start()
    metrics = tmp_path / "run" / "metrics.jsonl"
    while process.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait()
    hang_guard.cancel()
    reader.join()
    output = "".join(lines)
    assert process.returncode == 130, f"exit {process.returncode} (-9: killed as hung)\n{output[-2000:]}"
    assert "received SIGTERM" in output and f"rudolph-ft train --resume {tmp_path / 'run'}" in output
    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) >= 2
