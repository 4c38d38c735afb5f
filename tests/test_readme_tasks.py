"""README's "Tasks" section (issue 16, part 6) stays true: every `rudolph-ft` command it shows parses (subcommands,
options and arguments as the CLI declares them) and its `--help` runs, the Python block imports and calls what the
package has, the `tasks:` block is a valid run-config section, the table rows have the table's columns, and every
task is listed."""

import ast
import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.data.tasks_data import TASK_COLUMNS
from rudolph_ft.tasks import TASKS

README = Path(__file__).parents[1] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Tasks\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", section(), flags=re.S | re.M)


def commands() -> list[list[str]]:
    lines = [line for block in blocks("bash") for line in block.splitlines() if line.startswith("rudolph-ft ")]
    return [shlex.split(line, comments=True)[1:] for line in lines]


def test_the_section_shows_commands_of_each_kind():
    shown = {tuple(args[:2]) if args[0] == "data" else args[0] for args in commands()}
    assert {"ask", "ask-text", "read", "continue", "caption", "generate", "train", ("data", "demo"),
            ("data", "check")} <= shown


@pytest.mark.parametrize("args", commands(), ids=lambda args: "-".join(args[:2]))
def test_a_documented_command_parses(args):
    """Parsed by the CLI's own click commands (unknown options, missing or extra arguments fail), not run."""
    command = typer.main.get_command(app)  # (typer ships its own click)
    context = command.make_context("rudolph-ft", list(args), resilient_parsing=False)
    names = []
    while hasattr(command, "resolve_command"):  # a group: its subcommand
        pending = getattr(context, "_protected_args", None) or getattr(context, "protected_args", [])
        name, command, rest = command.resolve_command(context, [*pending, *context.args])
        names.append(name)
        context = command.make_context(name, rest, parent=context)
    assert context.params  # the subcommand's arguments, converted
    result = CliRunner().invoke(app, [*names, "--help"])
    assert result.exit_code == 0, result.output


def test_the_python_block_calls_what_it_imports():
    (code,) = blocks("python")
    tree = ast.parse(code)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                imported[alias.name] = getattr(module, alias.name)  # AttributeError: not there
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert called <= set(imported), called - set(imported)
    for name in ("answer", "answer_text", "read_text", "continue_text", "generate_captions", "generate_images"):
        assert name in called


def test_the_tasks_block_is_a_run_config_section(tmp_path):
    from rudolph_ft.train.config import read_train_config

    (yaml,) = blocks("yaml")
    (tmp_path / "run.yaml").write_text(yaml, encoding="utf-8")
    tasks = read_train_config(tmp_path / "run.yaml").tasks
    assert tasks.path.endswith("data/demo/tasks.jsonl") and tasks.loss_weights == {"vqa": (1, 1, 7)}


def test_the_table_rows_and_the_task_names():
    (rows,) = blocks("jsonl")
    for line in rows.splitlines():
        row = json.loads(line)
        assert tuple(row) == TASK_COLUMNS and row["task"] in TASKS
    for name in TASKS:
        assert f"`{name}`" in section()
    assert "rudolph-ft train configs/demo-multitask.yaml" in section()
