"""Run configs are typed: a bad value or key is refused at load with one line naming it (exit 2), nothing trained.

The table goes through `rudolph-ft train` in-process (CliRunner: fast); one case runs `python -m rudolph_ft` as a
user types it. Then the good cases: YAML 1.1 quirks still load, `rudolph-ft config show` lists every key.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.train.config import (
    DEMO_CONFIG,
    ConfigError,
    TrainConfig,
    describe_keys,
    load_train_config,
    read_train_config,
)

runner = CliRunner()


def every_key() -> list[str]:
    """Every dotted key of a run config, from the model's fields (not a list kept by hand)."""
    keys = []
    for name, field in TrainConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and hasattr(section, "model_fields"):
            keys.extend(f"{name}.{sub}" for sub in section.model_fields)
        else:
            keys.append(name)
    return keys


def assert_refused(result, run_dir: Path, *words: str) -> str:
    """Exit status 2, no traceback, one `error: ...` line holding every word, and no run folder."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not run_dir.exists()  # refused at load: nothing prepared, nothing trained
    return lines[0]


# ---- bad values and keys: (YAML file text or None for the demo config, overrides, words the error must hold) ----
BAD = [
    # wrong types
    (None, ["train.epochs=2.5"], ["override: train.epochs must be a whole number >= 1", "got 2.5"]),
    (None, ["train.batch_size=true"], ["train.batch_size must be a whole number >= 1", "got True"]),
    (None, ["model.name=350"], ["model.name must be a string", "got 350", "'model.name=\"350\"'"]),
    (None, ["data.path=7"], ["data.path must be a string", "quote it"]),
    (None, ["optim.lr=fast"], ["optim.lr must be a number > 0", "got 'fast'"]),
    (None, ["optim.lr=true"], ["optim.lr must be a number", "got True"]),
    (None, ["train.gradient_checkpointing=maybe"], ["train.gradient_checkpointing must be true or false"]),
    (None, ["logging.progress=1"], ["logging.progress must be true or false", "got 1"]),
    (None, ["model.overrides=3"], ["model.overrides must be a mapping"]),
    (None, ["train.epochs.x=1"], ["train.epochs is not a section"]),
    ("train:\n", ["train.epochs.x=1"], ["train.epochs must be a whole number >= 1", "got {'x': 1}"]),
    # out of range
    (None, ["train.grad_accum_steps=0"], ["train.grad_accum_steps must be a whole number >= 1", "got 0"]),
    (None, ["train.max_steps=-1"], ["train.max_steps must be a whole number >= 1 (or null: no limit)"]),
    (None, ["optim.lr=0"], ["optim.lr must be a number > 0", "got 0"]),
    (None, ["optim.eps=.inf"], ["optim.eps must be a number > 0"]),
    (None, ["data.val_fraction=1.5"], ["data.val_fraction must be a number in [0, 1)", "got 1.5"]),
    (None, ["vqgan.views=9"], ["vqgan.augment=dihedral gives at most 8 views"]),  # the demo's augment: dihedral
    # bad choices
    (None, ["train.precision=fp8"], ["train.precision must be one of no, bf16, fp16", "got 'fp8'"]),
    (None, ["train.strategy=deepspeed"], ["train.strategy must be one of ddp, fsdp"]),
    (None, ["vqgan.augment=mixup"], ["vqgan.augment must be one of gumbel, dihedral"]),
    (None, ["optim.group_lr={attn: 1e-4}"], ["optim.group_lr: unknown role(s) attn"]),
    (None, ["freeze.train=[attn, mlp]"], ["freeze.train: unknown role(s) attn"]),
    # wrong tuple lengths
    (None, ["train.loss_weights=[1, 2]"], ["train.loss_weights must be three numbers >= 0", "got [1, 2]"]),
    (None, ["optim.betas=[0.9, 0.99, 0.9]"], ["optim.betas must be two numbers in [0, 1)"]),
    # unknown keys and sections, malformed overrides
    (None, ["train.epoch=3"], ["unknown key train.epoch (did you mean train.epochs?)", "known keys of train: epochs"]),
    (None, ["trian.epochs=3"], ["unknown key or section trian (did you mean train?)", "checkpoint"]),
    (None, ["train.epochs"], ["train.epochs", "section.key=value"]),
    (None, ["optim.group_lr={output_head:"], ["optim.group_lr", "not valid YAML", "quote it"]),
    # YAML files
    ("train:\n  epochs: 2.5\n", [], ["bad.yaml: train.epochs must be a whole number >= 1", "got 2.5"]),
    ("train:\n  epochs: 3\n  batch_size: 0\n", [], ["bad.yaml: train.batch_size must be a whole number >= 1"]),
    ("model:\n  name: 350\n", [], ["bad.yaml: model.name must be a string", 'name: "350"']),
    ("optim:\n  betas: [0.9]\n", [], ["bad.yaml: optim.betas must be two numbers", "got [0.9]"]),
    ("train:\n  strategy: FSDP\n", [], ["bad.yaml: train.strategy must be one of ddp, fsdp", "got 'FSDP'"]),
    ("trainn:\n  epochs: 3\n", [], ["bad.yaml: unknown key or section trainn (did you mean train?)"]),
    ("train:\n  epochz: 3\n", [], ["bad.yaml: unknown key train.epochz (did you mean train.epochs?)"]),
    ("train: [1, 2]\n", [], ["bad.yaml: train must be a mapping of its keys (epochs,", "got [1, 2]"]),
    ("- train\n- optim\n", [], ["bad.yaml: expected a mapping of sections", "got list"]),
    ("train: [1, 2\n", [], ["bad.yaml: not valid YAML", "line"]),
    ("train:\n  epochs: 3\n epochs: 4\n", [], ["bad.yaml: not valid YAML", "line 3"]),
    ("train:\n  epochs: 3\n", ["train.epochs=0"], ["override: train.epochs must be a whole number >= 1", "got 0"]),
]


@pytest.mark.parametrize(("text", "overrides", "words"), BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_a_bad_config_is_one_line_naming_the_key_and_nothing_runs(tmp_path, text, overrides, words):
    config = DEMO_CONFIG
    if text is not None:
        config = tmp_path / "bad.yaml"
        config.write_text(text, encoding="utf-8")
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), *overrides, f"output_dir={run_dir}"])
    assert_refused(result, run_dir, *words)


def test_a_missing_config_file_is_one_line(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml"), f"output_dir={tmp_path / 'run'}"])
    assert_refused(result, tmp_path / "run", "nope.yaml: no such config file")


def test_the_command_a_user_types_is_refused_the_same_way(tmp_path):
    """`python -m rudolph_ft train ...` for real: exit 2, one line on stderr, no traceback, no run folder."""
    done = subprocess.run([sys.executable, "-m", "rudolph_ft", "train", str(DEMO_CONFIG), "train.epochs=2.5",
                           "output_dir=runs/typed"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: override: train.epochs must be a whole number >= 1, got 2.5"
    assert not (tmp_path / "runs").exists()


# ---- good values ----------------------------------------------------------------------------------------------
def test_numbers_as_yaml_1_1_reads_them_and_ints_for_floats(tmp_path):
    config = read_train_config(None, ["optim.lr=2e-5", "optim.eps=1e-8", "train.max_grad_norm=2",
                                      "train.loss_weights=[0, 1, 7]", "optim.betas=[0, 0.5]"])
    assert config.optim.lr == 2e-5 and isinstance(config.optim.lr, float)  # YAML 1.1: "2e-5" is a string
    assert config.train.max_grad_norm == 2.0 and isinstance(config.train.max_grad_norm, float)
    assert config.train.loss_weights == (0.0, 1.0, 7.0) and config.optim.betas == (0.0, 0.5)
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 2e-5\n  group_lr: {output_head: 1e-4}\ntrain:\n  precision: no\n"
                    "logging:\n  wandb: off\n", encoding="utf-8")
    config = read_train_config(path)
    assert (config.optim.lr, config.optim.group_lr) == (2e-5, {"output_head": 1e-4})
    assert (config.train.precision, config.logging.wandb) == ("no", "off")  # YAML 1.1 reads no / off as false


def test_new_keys_and_the_old_grad_accum_key(tmp_path):
    old = tmp_path / "run_config.yaml"
    old.write_text("train:\n  grad_accum: 4\n", encoding="utf-8")  # a run_config.yaml from before the rename
    config = read_train_config(old, ["train.gradient_checkpointing=true", "train.strategy=fsdp", "train.max_steps=7"])
    assert config.train.grad_accum_steps == 4
    assert (config.train.gradient_checkpointing, config.train.strategy, config.train.max_steps) == (True, "fsdp", 7)
    assert read_train_config(None, ["train.grad_accum=2"]).train.grad_accum_steps == 2
    config.save(tmp_path / "saved.yaml")
    assert "grad_accum_steps: 4" in (tmp_path / "saved.yaml").read_text(encoding="utf-8")


def test_save_and_load_round_trip_and_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = read_train_config(DEMO_CONFIG, ["train.epochs=3", "optim.group_lr={output_head: 1e-4}"])
    config.save("run_config.yaml")
    again = read_train_config("run_config.yaml")
    assert again.output_dir == str(tmp_path / "runs" / "demo")  # paths made absolute
    assert again.to_dict() == {**config.to_dict(), "output_dir": again.output_dir,
                               "data": {**config.to_dict()["data"], "path": str(tmp_path / "data" / "demo")}}
    assert TrainConfig().to_dict() == read_train_config().to_dict()
    assert TrainConfig().train.loss_weights == (0.01, 1.0, 7.0)


def test_sections_can_be_assigned_checked_and_replace_checks():
    config = TrainConfig()
    config.data.path = "elsewhere/data.csv"  # as resolve_data_path does
    assert config.data.path == "elsewhere/data.csv"
    with pytest.raises(ValueError, match="epochs"):
        config.train.epochs = 2.5
    copy = config.replace(output_dir="runs/other")
    assert copy.output_dir == "runs/other" and copy.data.path == "elsewhere/data.csv" and copy.data is not config.data
    with pytest.raises(ConfigError, match="output_dir must be a string"):
        config.replace(output_dir=3)
    with pytest.raises(ConfigError, match="unknown key or section outdir"):
        config.replace(outdir="x")


def test_every_number_has_a_range_and_every_key_a_help():
    for key, kind, _, help_text in describe_keys():
        assert help_text, f"{key} has no help"
        if kind.split()[0] in ("int", "float"):
            assert len(kind.split()) > 1 and kind.split()[1] in (">=", ">", "in"), f"{key}: no range ({kind})"


# ---- rudolph-ft config show -----------------------------------------------------------------------------------
def test_config_show_lists_every_key_and_the_resolved_values():
    result = runner.invoke(app, ["config", "show", "train.epochs=3", "optim.lr=1e-4", "train.grad_accum=2"])
    assert result.exit_code == 0, result.output
    table, resolved = result.stdout.split("\n# resolved: ", 1)
    listed = {line.split()[0] for line in table.splitlines() if line and not line.startswith(("[", "key "))}
    assert listed == set(every_key())
    assert "train.epochs                  int >= 1" in table  # type, aligned
    assert resolved.startswith(str(DEMO_CONFIG))  # no CONFIG: the demo config, as `rudolph-ft train`
    values = yaml.safe_load(resolved.split("\n", 1)[1])
    assert (values["train"]["epochs"], values["optim"]["lr"], values["train"]["grad_accum_steps"]) == (3, 1e-4, 2)
    assert values["output_dir"] == "runs/demo" and values["vqgan"]["augment"] == "dihedral"
    assert TrainConfig(**values).to_dict() == values


def test_config_show_of_a_file_and_of_a_bad_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: runs/mine\ntrain:\n  epochs: 2\n", encoding="utf-8")
    result = runner.invoke(app, ["config", "show", str(path), "train.batch_size=4"])
    assert result.exit_code == 0, result.output
    values = yaml.safe_load(result.stdout.split("\n# resolved: ", 1)[1].split("\n", 1)[1])
    assert (values["output_dir"], values["train"]["epochs"], values["train"]["batch_size"]) == ("runs/mine", 2, 4)
    assert_refused(runner.invoke(app, ["config", "show", str(path), "train.epochs=two"]), tmp_path / "runs",
                   "override: train.epochs must be a whole number >= 1", "got 'two'")


def test_train_help_points_at_config_show():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "rudolph-ft config show" in result.stdout


def test_load_train_config_still_resolves_the_demo_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/demo here: the cached demo set (drawn once) is used
    config = load_train_config(DEMO_CONFIG, echo=lambda message: None)
    assert Path(config.data.path).is_dir() and Path(config.data.path) != Path("data/demo")
