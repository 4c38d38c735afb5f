"""LoRA / QLoRA runs through the trainer and the CLI: adapter-only checkpoints naming their base, resume, eval,
caption and merge on a LoRA run, and the clear errors around them (tiny models, seconds)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train import losses, small_data, tiny_config  # noqa: F401  (small_data: a fixture)
from test_train_distributed import shutil_rm_after
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.train.loop import Trainer

LORA = ["finetune.method=lora", "freeze.train=[]", "lora.targets=[attention, mlp, output_head]", "lora.r=4",
        "lora.dropout=0.1", "optim.lr=1e-2", "model.pretrained=true"]


@pytest.fixture(scope="module")
def base(small_data, tmp_path_factory) -> Path:  # noqa: F811
    """A trained tiny model (1 epoch): the base the adapters are trained on."""
    run = tmp_path_factory.mktemp("base") / "run"
    Trainer(tiny_config(small_data, run, "train.epochs=1", "checkpoint.every=0"), echo=lambda m: None).run()
    return run / "final"


def lora_config(small_data, base: Path, run: Path, *extra: str):  # noqa: F811
    return tiny_config(small_data, run, f"model.name={base}", *LORA, *extra)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_lora_run_saves_adapters_only_and_resumes_bitwise(small_data, base, tmp_path):  # noqa: F811
    """The default 8-bit Adam, with gradient checkpointing: every piece a 350M LoRA run uses."""
    messages = []
    extra = ["optim.name=adam8bit", "train.gradient_checkpointing=true", "checkpoint.keep=10", "train.epochs=2"]
    Trainer(lora_config(small_data, base, tmp_path / "whole", *extra), echo=messages.append).run()
    table = next(m for m in messages if m.startswith("group"))
    adapters = int(next(line for line in table.splitlines() if line.startswith("adapters")).split()[1].replace(",", ""))
    assert adapters > 0 and "output_head                       0" in table  # base frozen, adapters train
    final = tmp_path / "whole/final"
    assert {"adapter_model.safetensors", "adapter_config.json", "base.json"} <= {p.name for p in final.iterdir()}
    assert not (final / "model.safetensors").exists()
    assert (final / "adapter_model.safetensors").stat().st_size < 4 * adapters + 64 * 1024  # the adapter alone
    assert json.loads((final / "base.json").read_text())["base"]["path"] == str(base.resolve())

    # killed after the step-4 checkpoint: resumed, the curve and the adapter continue bitwise
    shutil.copytree(tmp_path / "whole", tmp_path / "stopped")
    shutil_rm_after(tmp_path / "stopped", 4)
    Trainer(lora_config(small_data, base, tmp_path / "stopped", *extra), resume=True, echo=lambda m: None).run()
    assert losses(tmp_path / "stopped") == losses(tmp_path / "whole")
    assert (tmp_path / "stopped/final/adapter_model.safetensors").read_bytes() == \
        (final / "adapter_model.safetensors").read_bytes()


def test_every_command_takes_a_lora_run_and_merge_writes_a_full_model(small_data, base, tmp_path):  # noqa: F811
    from rudolph_ft.components import load_components
    from rudolph_ft.model import load_model

    run = tmp_path / "run"
    Trainer(lora_config(small_data, base, run, "optim.name=adamw"), echo=lambda m: None).run()
    adapted = load_model(run)  # base (checked) + adapter
    assert getattr(adapted, "peft_config", None)
    photo = str(small_data / "images" / sorted(p.name for p in (small_data / "images").iterdir())[0])
    result = invoke("caption", photo, "--model", str(run), "-n", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["captions"]

    result = invoke("merge", str(run), "--out", str(tmp_path / "merged"))
    assert result.exit_code == 0, result.output
    merged = load_components(tmp_path / "merged")
    assert not getattr(merged.model, "peft_config", None)
    assert (tmp_path / "merged/model.safetensors").is_file() and (tmp_path / "merged/bpe.model").is_file()
    ids = torch.randint(1, 150, (2, adapted.config.total_seq_length))
    ids[:, adapted.config.l_text_seq_length:-adapted.config.r_text_seq_length] = torch.randint(
        0, 64, (2, adapted.config.image_seq_length))
    with torch.no_grad():
        a, b = adapted.eval()(ids).logits, merged.model.eval()(ids).logits
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    # the merged model is a base like any other: a second LoRA run on it
    second = tmp_path / "second"
    Trainer(lora_config(small_data, tmp_path / "merged", second, "optim.name=adamw", "train.max_steps=1"),
            echo=lambda m: None).run()
    assert (second / "final/base.json").is_file()


def test_lora_mistakes_are_one_line_errors(small_data, base, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    config = lora_config(small_data, base, run, "optim.name=adamw", "train.max_steps=2")
    config.save(tmp_path / "lora.yaml")
    scratch = invoke("train", str(tmp_path / "lora.yaml"), "model.pretrained=false", f"output_dir={tmp_path / 'x'}")
    assert scratch.exit_code == 2 and "model.pretrained=true" in scratch.output
    bad_target = invoke("train", str(tmp_path / "lora.yaml"), "lora.targets=[attn]", f"output_dir={tmp_path / 'y'}")
    assert bad_target.exit_code == 2 and "'attn'" in bad_target.output and "attention" in bad_target.output
    assert invoke("train", str(tmp_path / "lora.yaml")).exit_code == 0

    # the base changed since: loading the run names both hashes
    changed = tmp_path / "changed_base"
    shutil.copytree(base, changed)
    trained = json.loads((run / "final/base.json").read_text())
    trained["base"]["path"] = str(changed)
    (run / "final/base.json").write_text(json.dumps(trained))
    from rudolph_ft.model import load_model

    model = load_model(changed)
    with torch.no_grad():
        model.to_logits[1].bias.add_(1.0)
    from rudolph_ft.model import save_model

    save_model(model, changed)
    photo = next((small_data / "images").iterdir())
    result = CliRunner().invoke(app, ["caption", str(photo), "--model", str(run)])
    assert result.exit_code != 0
    message = str(result.exception) + result.output
    assert "other weights" in message and str(changed) in message

    merged_twice = invoke("merge", str(base), "--out", str(tmp_path / "m"))
    assert merged_twice.exit_code == 2 and "not a LoRA adapter" in merged_twice.output


def test_qlora_trains_on_the_cpu(small_data, base, tmp_path):  # noqa: F811
    """QLoRA: the base's adapted linears in NF4 (bitsandbytes), frozen; the adapters learn (the loss falls)."""
    run = tmp_path / "run"
    seen = []
    Trainer(lora_config(small_data, base, run, "finetune.method=qlora", "optim.name=adamw", "train.epochs=2"),
            echo=seen.append).run()
    table = next(m for m in seen if m.startswith("group"))
    assert "adapters" in table
    curve = [loss for _, loss in losses(run)]
    assert curve[-1] < curve[0]
    info = json.loads((run / "final/base.json").read_text())
    assert info["adapter"]["method"] == "qlora"


@pytest.mark.slow
def test_two_process_lora_run_interrupted_and_resumed_equals_the_uninterrupted_run(small_data, base,  # noqa: F811
                                                                                   tmp_path):
    """DDP with adapters: 2 gloo processes, SIGTERM'd and resumed with the printed command, equal the run that was
    never stopped (losses and the adapter file, bitwise)."""
    from test_train_distributed import interrupted_then_resumed, metric_rows, run_to_end

    extra = ["optim.name=adamw", "train.epochs=2", "train.batch_size=4", "checkpoint.every=1", "checkpoint.keep=5",
             "data.val_fraction=0"]
    for name in ("whole", "stopped"):
        lora_config(small_data, base, tmp_path / name, *extra).save(tmp_path / f"{name}.yaml")
    run_to_end(tmp_path / "whole.yaml")
    interrupted_then_resumed(tmp_path / "stopped.yaml", tmp_path / "stopped", after_step=2)
    assert metric_rows(tmp_path / "whole") == metric_rows(tmp_path / "stopped")
    assert (tmp_path / "whole/final/adapter_model.safetensors").read_bytes() == \
        (tmp_path / "stopped/final/adapter_model.safetensors").read_bytes()
