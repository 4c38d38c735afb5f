"""Failures a user meets on the command line end in one line naming the file or key and what to do (exit 2)."""

import ast
import csv
import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ASSETS
from typer.testing import CliRunner

from rudolph_ft.cli import app

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread

PHOTO = str(sorted((ASSETS / "images").glob("*.jpg"))[0])
SCRIPTS = Path(sys.executable).parent
runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *words: str) -> str:
    """Exit status 2, no traceback, a single `error: ...` line on stderr holding every word."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ---- damaged and missing models ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return bundle.save_tiny_bundle(tmp_path_factory.mktemp("bundle") / "model", seed=1)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
@pytest.mark.parametrize("part", ["model.safetensors", "vqgan/model.safetensors"])
def test_a_damaged_weights_file_is_one_line_naming_it(saved_model, tmp_path, damage, part):
    import shutil

    model = shutil.copytree(saved_model, tmp_path / "model")
    weights = model / part
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    line = assert_one_line_error(invoke("caption", PHOTO, "--model", model, "-n", "1"), "truncated or damaged")
    assert str(weights if part == "model.safetensors" else weights.parent) in line
    assert_one_line_error(invoke("eval", "--model", model, "--data", tmp_path), str(model), "truncated or damaged")


def test_eval_of_a_missing_model_is_one_line():
    assert_one_line_error(invoke("eval", "--model", "nope"), "cannot evaluate 'nope'", "neither a preset")


# ---- config values checked at load, naming the key and the allowed range -----------------------------------
@pytest.mark.parametrize(("override", "words"), [
    ("logging.every=0", ["logging.every must be a whole number >= 1", "got 0"]),
    ("optim.lr=-1e-3", ["optim.lr must be a number > 0", "got -0.001"]),
    ("train.epochs=2.5", ["train.epochs must be a whole number >= 1", "got 2.5"]),
    ("train.epochs=yes", ["train.epochs must be a whole number >= 1", "got True"]),
    ("train.batch_size=0", ["train.batch_size must be a whole number >= 1"]),
    ("data.val_fraction=1", ["data.val_fraction must be a number in [0, 1)"]),
    ("schedule.pct_start=0", ["schedule.pct_start must be a number in (0, 1)"]),
    ("optim.betas=[0.9]", ["optim.betas must be two numbers in [0, 1)"]),
    ("train.loss_weights=[1, -1, 7]", ["train.loss_weights must be three numbers >= 0"]),
    ("optim.group_lr={output_head: 0}", ["optim.group_lr must be a mapping of freeze roles to learning rates > 0"]),
    ("optim.eps=.inf", ["optim.eps must be a number > 0"]),
    ("checkpoint.keep=0", ["checkpoint.keep must be a whole number >= 1"]),
    ("optim.group_lr={output_head:", ["not valid YAML", "quote it"]),
])
def test_bad_numbers_are_refused_before_any_work(tmp_path, override, words):
    result = invoke("train", override, f"output_dir={tmp_path / 'run'}")
    assert_one_line_error(result, *words)
    assert not (tmp_path / "run").exists()  # refused at load: no run folder, no data prepared


# ---- serve on a busy port ----------------------------------------------------------------------------------
def test_serve_on_a_taken_port_says_so_and_how_to_choose_another(saved_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(SCRIPTS / "rudolph-ft"), "serve", "--model", saved_model, "--port", str(port)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: port {port} on 127.0.0.1 is taken (another `rudolph-ft serve`?); stop that "
                                   f"server or choose another port with --port, e.g. --port {port + 1}")


# ---- the offline message names commands that exist ---------------------------------------------------------
def offline_messages(tmp_path) -> list[str]:
    from rudolph_ft.hub import WeightsNotFoundError
    from rudolph_ft.model import load_model, load_vqgan
    from rudolph_ft.tokenizer import load_tokenizer

    messages = []
    for load in (lambda: load_model("350M", cache_dir=tmp_path, offline=True),
                 lambda: load_vqgan("sber-gumbel-f8", cache_dir=tmp_path, offline=True),
                 lambda: load_tokenizer("rudalle", cache_dir=tmp_path, offline=True)):
        with pytest.raises(WeightsNotFoundError) as error:
            load()
        messages.append(str(error.value))
    return messages


def test_the_offline_message_names_real_commands(tmp_path):
    for message in offline_messages(tmp_path):
        lines = [line.strip() for line in message.splitlines()]
        download = next(line for line in lines if line.startswith("hf download "))
        argv = shlex.split(download)
        done = subprocess.run([str(SCRIPTS / argv[0]), *argv[1:], "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "Download" in done.stdout, done.stderr
        python = next(line for line in lines if line.startswith("from rudolph_ft import "))
        snippet, _, cli = python.partition("  /  ")
        tree = ast.parse(snippet)  # the Python is valid, and the name it imports exists
        name = tree.body[0].names[0].name
        import rudolph_ft

        assert callable(getattr(rudolph_ft, name)) and tree.body[1].value.func.id == name
        if cli:  # --tokenizer / --vqgan: an option of the inference commands
            assert cli.split()[0] in invoke("caption", "--help").output
        assert "huggingface-cli" not in message and "load(" not in message


# ---- resume from any folder; a cut-off metrics line --------------------------------------------------------
def small_run_folder(folder: Path) -> Path:
    """`folder` with 24 demo photos in data/ and run.yaml (relative data path): the demo config, shrunk to seconds."""
    from test_cli_resume import write_small_run

    return write_small_run(folder, epochs=2, checkpoint={"every": 2, "keep": 1}, views=None)


def test_resume_from_another_folder_with_a_cut_off_metrics_line(tmp_path):
    import yaml
    from test_cli_resume import run

    work = small_run_folder(tmp_path / "work")
    first = run("rudolph-ft train run.yaml output_dir=runs/conc train.max_steps=2", work)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    run_dir = work / "runs" / "conc"
    saved = (run_dir / "run_config.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(saved)["data"]["path"] == str(work / "data")  # absolute: resumable from anywhere
    assert yaml.safe_load(saved)["output_dir"] == str(run_dir)
    assert "# data.path: data\n" in saved and "# output_dir: runs/conc\n" in saved  # as the user wrote them
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 3, "epoch": 0, "loss": 5.1', encoding="utf-8")  # a kill

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run(["rudolph-ft", "train", "--resume", str(run_dir), "train.max_steps=4"], elsewhere)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"note: {metrics}: dropped its cut-off last line" in done.stdout
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4]
    assert (run_dir / "checkpoints" / "step-4").is_dir() and not list(elsewhere.iterdir())


def test_a_damaged_metrics_line_before_the_last_names_the_file_and_line(tmp_path):
    from rudolph_ft.train.metrics import MetricsLog

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not valid JSON"):
        MetricsLog(tmp_path, truncate_after=3)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    told = []
    assert MetricsLog(tmp_path, truncate_after=3, echo=told.append).losses() == [(1, 2.0)]
    assert told == [f"note: {tmp_path / 'metrics.jsonl'}: dropped its cut-off last line (the run was stopped while "
                    "writing it)"]


# ---- state an earlier attempt left is checked, never reused silently ----------------------------------------
def test_a_failed_attempts_tokenizer_is_checked_and_its_folder_is_resumed_not_reused(tmp_path):
    from test_cli_resume import run

    work = small_run_folder(tmp_path)
    # fails after learning its 200-id bpe.model: the model's text vocabulary is too small for it
    failed = run("rudolph-ft train run.yaml output_dir=runs/x model.overrides.vocab_size=150", work)
    assert failed.returncode == 2 and "the tokenizer has 200 ids" in failed.stderr, failed.stderr[-3000:]
    run_dir = work / "runs" / "x"
    assert (run_dir / "bpe.model").is_file() and (run_dir / "bpe.settings.json").is_file()

    again = run("rudolph-ft train run.yaml output_dir=runs/x tokenizer.train_vocab_size=300", work)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr[-3000:]
    assert again.stderr == ("error: runs/x holds an unfinished run that saved no checkpoint (run_config.yaml, "
                            "bpe.model); start it again with `rudolph-ft train --resume runs/x` (its saved config, "
                            "from step 0) or choose another output_dir\n")

    other = run("rudolph-ft train --resume runs/x tokenizer.train_vocab_size=300", work)
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr[-3000:]
    assert ("runs/x/bpe.model was learned with tokenizer.train_vocab_size=200 (runs/x/bpe.settings.json), this "
            "run's config says 300") in other.stderr

    other = run("rudolph-ft train --resume runs/x data.val_fraction=0.5", work)  # another split: other captions
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr[-3000:]
    assert ("runs/x/bpe.model was learned with data.val_fraction=0.2 (runs/x/bpe.settings.json), this run's config "
            "says 0.5") in other.stderr
    other = run("rudolph-ft train --resume runs/x tokenizer.split_digits=true", work)  # another segmentation
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr[-3000:]
    assert ("runs/x/bpe.model was learned with tokenizer.split_digits=False (runs/x/bpe.settings.json), this run's "
            "config says True") in other.stderr
    assert "tokenizer:\n  name: null\n  train_vocab_size: 200" in (run_dir / "run_config.yaml").read_text()  # kept

    table = work / "data" / "data.csv"
    original = table.read_text(encoding="utf-8")
    rows = list(csv.DictReader(original.splitlines()))
    with table.open("w", encoding="utf-8", newline="") as handle:  # every kcal value changed: other captions
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "kkal": str(float(row["kkal"]) + 1)} for row in rows)
    changed = run("rudolph-ft train --resume runs/x", work)
    assert changed.returncode == 2 and changed.stderr.count("\n") == 1, changed.stderr[-3000:]
    assert re.search(r"runs/x/bpe.model was learned from 19 training captions of /\S+/data \(sha256 \w+\) "
                     r"\(runs/x/bpe.settings.json\), this run has 19 training captions of /\S+/data \(sha256 \w+\): "
                     "the data changed", changed.stderr), changed.stderr
    table.write_text(original, encoding="utf-8")

    done = run("rudolph-ft train --resume runs/x model.overrides.vocab_size=600 train.max_steps=1", work)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "runs/x: no checkpoint yet; starting the run again from step 0 with its saved config" in done.stdout
    assert "tokenizer: learned" not in done.stdout  # the attempt's bpe.model, checked, is reused
    assert (run_dir / "final" / "bpe.model").read_bytes() == (run_dir / "bpe.model").read_bytes()
