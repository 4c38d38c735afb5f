"""The `rudolph-ft` command line: thin wrappers over the library, one sub-command per job."""

from __future__ import annotations

import typer

app = typer.Typer(help="Fine-tune and use the RuDOLPH hyper-modal transformer.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Check, describe and generate captioned-image datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ---- data commands (rudolph_ft/data) -------------------------------------------------------------------------
# DATA is a CSV/TSV/JSONL table or a folder with data.csv / labels.csv / data.jsonl; images are relative to its folder.
# Without column options the article's schema is used (index, belok, fats, uglevod, kkal, name, path).
_DATA_ARG = typer.Argument(..., help="label table (CSV/TSV/JSONL) or a folder holding data.csv / labels.csv")
_IMAGES_ROOT = typer.Option(None, "--images-root", help="folder the image paths are relative to (default: the "
                            "table's folder)")
_TEMPLATE = typer.Option(None, help="caption template over any columns, e.g. 'блюдо: {dish};' (default: the "
                         "article's template)")
_CAPTION_COLUMN = typer.Option(None, help="take captions verbatim from this column")
_IMAGE_COLUMN = typer.Option(None, help="column with the image paths (default: path)")
_NUMERIC = typer.Option("", help="comma-separated columns that must hold non-negative numbers")
_REQUIRED = typer.Option("", help="comma-separated columns that must not be empty")
_LABEL = typer.Option(None, help="column naming each row's class (the dish), for counts")


def _data_config(data: str, images_root: str | None, template: str | None, caption_column: str | None,
                 image_column: str | None, numeric: str, required: str, label: str | None):
    from .data import config_for

    def names(text: str) -> tuple[str, ...]:
        return tuple(name.strip() for name in text.split(",") if name.strip())

    return config_for(data, images_root, template=template, caption_column=caption_column, image_column=image_column,
                      numeric_columns=names(numeric), required_columns=names(required), label_column=label)


def _data_error(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(2)


@data_app.command("check")
def data_check(
    data: str = _DATA_ARG,
    images_root: str | None = _IMAGES_ROOT,
    strict: bool = typer.Option(False, "--strict", help="exit with status 1 when any row is excluded"),
    json_output: bool = typer.Option(False, "--json", help="print the report as JSON"),
    template: str | None = _TEMPLATE,
    caption_column: str | None = _CAPTION_COLUMN,
    image_column: str | None = _IMAGE_COLUMN,
    numeric: str = _NUMERIC,
    required: str = _REQUIRED,
    label: str | None = _LABEL,
) -> None:
    """Read every row and image once; print the rows kept and each excluded row with its reason.

    Exit status: 1 with --strict when any row is excluded; 2 when the table cannot be read or an option is wrong.
    """
    import json

    from .data import DataError, check_data

    try:
        config = _data_config(data, images_root, template, caption_column, image_column, numeric, required, label)
        report = check_data(config, progress=True)
    except (DataError, ValueError) as err:
        raise _data_error(err) from None
    typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if json_output else report.summary())
    if strict and report.excluded:
        raise typer.Exit(1)


@data_app.command("demo")
def data_demo(
    out: str = typer.Option("data/demo", help="dataset folder to write"),
    n: int = typer.Option(300, help="number of photos"),
    seed: int = typer.Option(0, help="dataset seed"),
    size: int = typer.Option(128, help="photo side in pixels"),
    quality: int = typer.Option(90, help="JPEG quality"),
) -> None:
    """Draw a synthetic food-photo dataset in the article's CSV format (deterministic for a seed)."""
    from .data.demo import make_demo

    table = make_demo(out, n=n, seed=seed, size=size, quality=quality)
    total = sum(path.stat().st_size for path in table.parent.rglob("*") if path.is_file())
    typer.echo(f"wrote {n} photos and {table} ({total / 1e6:.2f} MB)")


@data_app.command("stats")
def data_stats(
    data: str = _DATA_ARG,
    out: str = typer.Option(..., help="folder for the PNG plots and stats.json"),
    images_root: str | None = _IMAGES_ROOT,
    template: str | None = _TEMPLATE,
    caption_column: str | None = _CAPTION_COLUMN,
    image_column: str | None = _IMAGE_COLUMN,
    numeric: str = _NUMERIC,
    required: str = _REQUIRED,
    label: str | None = _LABEL,
) -> None:
    """Counts per dish, caption lengths, nutrient distributions and a word cloud of the kept rows (PNG + JSON)."""
    from .data import DataError, check_data
    from .data.stats import write_stats

    try:
        config = _data_config(data, images_root, template, caption_column, image_column, numeric, required, label)
        report = check_data(config, read_images=False, progress=True)
    except (DataError, ValueError) as err:
        raise _data_error(err) from None
    stats = write_stats(report, out)
    typer.echo(f"rows: {stats['rows']}, kept: {stats['kept']}, excluded: {stats['excluded']}"
               + (" (run `rudolph-ft data check` for the reasons)" if stats["excluded"] else ""))
    for name, count in stats["per_label"].items():
        typer.echo(f"  {count:6d}  {name}")
    for path in stats["files"]:
        typer.echo(f"wrote {path}")


# ---- model commands ------------------------------------------------------------------------------------------
@app.command()
def presets() -> None:
    """List the model presets: layout, size and where their weights live."""
    from .config import MODEL_PRESETS

    for name, cfg in MODEL_PRESETS.items():
        hub = f"{cfg.hub.repo_id}/{cfg.hub.filename}" if cfg.hub else "(random init only)"
        typer.echo(f"{name:10} {cfg.num_layers:>2} layers x {cfg.hidden_size:>4}  "
                   f"[{cfg.l_text_seq_length} | {cfg.image_tokens_per_dim}x{cfg.image_tokens_per_dim} | "
                   f"{cfg.r_text_seq_length}]  {hub}")


@app.command()
def smoke(
    model: str = typer.Option("tiny", help="preset name or model path"),
    batch_size: int = typer.Option(2, help="batch size of the check"),
) -> None:
    """Build (or load) a model and check one training step and cached decoding on random tokens."""
    from .model.smoke import smoke_test

    for line in smoke_test(model, batch_size=batch_size):
        typer.echo(line)


# ---- training commands (rudolph_ft/train) --------------------------------------------------------------------
DEMO_CONFIG = "configs/demo.yaml"


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Argument(None, help=f"run config YAML (default: {DEMO_CONFIG}, the from-scratch demo)"),
    resume: str = typer.Option(None, "--resume", help="continue the run in this directory from its last checkpoint"),
) -> None:
    """Fine-tune RuDOLPH. Extra arguments `section.key=value` override the config (e.g. train.epochs=3)."""
    import sys

    from .train.config import ConfigError
    from .train.loop import TrainingStopped
    from .train.loop import train as run_training

    config = config if config is not None or resume is not None else _demo_config()
    if config is not None and "=" in config:  # the first override, not a file
        ctx.args.insert(0, config)
        config = _demo_config() if resume is None else None
    try:
        summary = run_training(config, list(ctx.args), resume=resume, echo=typer.echo)
    except (ConfigError, FileNotFoundError, FileExistsError, TrainingStopped, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if summary.get("stopped"):
        sys.exit(130)


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="a training run directory, model directory or preset"),
    data: str = typer.Option(None, "--data", help="labelled data (CSV / folder); default: the run's validation split"),
    images_root: str = typer.Option(None, "--images-root", help="folder the data's image paths are relative to"),
    captions: int = typer.Option(8, "--captions", help="captions sampled per photo"),
    seed: int = typer.Option(43, help="sampling seed"),
    out: str = typer.Option(None, "--out", help="write the full report (JSON) here"),
    modality_check: bool = typer.Option(True, help="also score with the photos swapped between examples"),
) -> None:
    """Dish accuracy and kcal / nutrient MAE from generated captions, next to the always-the-mean baseline."""
    import json
    from pathlib import Path

    from .train.evaluate import evaluate_labelled_data, format_report

    report = evaluate_labelled_data(model, data, images_root=images_root, n=captions, seed=seed,
                                    modality_check=modality_check, echo=typer.echo)
    typer.echo(format_report(report))
    if out:
        Path(out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        typer.echo(f"report: {out}")


def _demo_config() -> str:
    from pathlib import Path

    if not Path(DEMO_CONFIG).is_file():
        raise typer.BadParameter(f"no config given and {DEMO_CONFIG} not found here: run from the rudolph-ft "
                                 "checkout or pass a config file")
    return DEMO_CONFIG


# ---- inference commands (rudolph_ft/pipelines, rudolph_ft/app.py) ---------------------------------------------


def main() -> None:
    app()
