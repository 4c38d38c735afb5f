"""The `rudolph-ft` command line: thin wrappers over the library, one sub-command per job."""

from __future__ import annotations

import typer

from .tasks import BASELINE_SAMPLING, FOOD  # torch-free: the tasks' defaults (sampling, prompt) for the options

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
_OUTSIDE_ROOT = typer.Option(False, "--allow-outside-root", help="use image paths that leave the images root "
                             "(../, absolute paths, symlinks out); by default such rows are excluded unopened")


def _data_config(data: str, images_root: str | None, template: str | None, caption_column: str | None,
                 image_column: str | None, numeric: str, required: str, label: str | None, allow_outside_root: bool):
    from .data import config_for

    def names(text: str) -> tuple[str, ...]:
        return tuple(name.strip() for name in text.split(",") if name.strip())

    return config_for(data, images_root, template=template, caption_column=caption_column, image_column=image_column,
                      numeric_columns=names(numeric), required_columns=names(required), label_column=label,
                      allow_outside_root=allow_outside_root)


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
    allow_outside_root: bool = _OUTSIDE_ROOT,
) -> None:
    """Read every row and image once; print the rows kept and each excluded row with its reason.

    Exit status: 1 with --strict when any row is excluded; 2 when the table cannot be read or an option is wrong.
    """
    import json

    from .data import DataError, check_data
    from .data.tasks_data import is_task_table, read_task_table

    try:
        if is_task_table(data):  # a multitask table (task, left_text, image, right_text)
            checked = read_task_table(data, images_root, strict=False, allow_outside_root=allow_outside_root)
            typer.echo(checked.summary())
            raise typer.Exit(1 if strict and checked.problems else 0)
        config = _data_config(data, images_root, template, caption_column, image_column, numeric, required, label,
                              allow_outside_root)
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
    style: str = typer.Option("closeup", help="drawing style: closeup (the quick start's ten dishes) or bowls "
                              "(eight other dishes, bowls and plates on random-colour tables, portions 0.5-1.6x)"),
    tasks: bool = typer.Option(False, "--tasks", help="also write multitask rows (tasks.jsonl, tasks_val.jsonl): "
                               "questions about each photo (VQA) and about the dishes' nutrition (text QA)"),
) -> None:
    """Draw a synthetic food-photo dataset in the article's CSV format (deterministic for a seed)."""
    from .data.demo import STYLES, make_demo

    if style not in STYLES:
        typer.echo(f"error: unknown --style {style!r}: use one of {', '.join(STYLES)}", err=True)
        raise typer.Exit(2)
    table = make_demo(out, n=n, seed=seed, size=size, quality=quality, style=style)
    total = sum(path.stat().st_size for path in table.parent.rglob("*") if path.is_file())
    typer.echo(f"wrote {n} photos and {table} ({total / 1e6:.2f} MB)")
    if tasks:
        from .data.demo_tasks import write_demo_tasks

        for path in write_demo_tasks(table, style=style):
            rows = sum(1 for _ in path.open(encoding="utf-8"))
            typer.echo(f"wrote {rows} multitask rows to {path}")


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
    allow_outside_root: bool = _OUTSIDE_ROOT,
) -> None:
    """Counts per dish, caption lengths, nutrient distributions and a word cloud of the kept rows (PNG + JSON)."""
    from .data import DataError, check_data
    from .data.stats import write_stats

    try:
        config = _data_config(data, images_root, template, caption_column, image_column, numeric, required, label,
                              allow_outside_root)
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


@app.command()
def merge(
    model: str = typer.Argument(..., help="a LoRA run (its final model, else newest checkpoint) or adapter folder"),
    out: str = typer.Option(..., "--out", help="the full model folder to write (must not exist, or be empty)"),
) -> None:
    """Fold a LoRA / QLoRA run's adapters into its base: a full model folder that every command loads."""
    from .lora import merge_run

    try:
        path = merge_run(model, out, echo=typer.echo)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"merged model: {path}")


# ---- training commands (rudolph_ft/train) --------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: str = typer.Argument(None, help="run config YAML (default: the from-scratch demo packaged with "
                                 "rudolph-ft, configs/demo.yaml in the checkout)"),
    resume: str = typer.Option(None, "--resume", help="continue the run in this directory from its last checkpoint"),
) -> None:
    """Fine-tune RuDOLPH. Extra arguments `section.key=value` override the config (e.g. train.epochs=3).

    Every key, with its type, default and help: `rudolph-ft config show`.
    """
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
    finally:  # a torchrun process exiting with its gloo / NCCL group alive may abort ("terminate called ...")
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if summary.get("stopped"):
        sys.exit(130)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def plan(
    ctx: typer.Context,
    config: str = typer.Argument(None, help="run config YAML (default: the demo config, as for train)"),
) -> None:
    """Memory plan of a run before it starts: parameters (trainable / frozen), bytes of weights, gradients, optimizer
    states and activations, and the peak per GPU for 1, 2, 4, 8 GPUs with DDP and FSDP. Nothing is allocated or
    downloaded (the model is built on the meta device). Extra arguments `section.key=value` override the config."""
    from .train.config import ConfigError, read_train_config
    from .train.plan import format_plan, memory_plan

    if config is not None and "=" in config:  # the first override, not a file
        ctx.args.insert(0, config)
        config = None
    try:  # (the data are not read: read_train_config, not load_train_config, which draws the demo set if missing)
        run_config = read_train_config(config if config is not None else _demo_config(), list(ctx.args))
        report = format_plan(memory_plan(run_config))
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report)


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="a training run directory, model directory or preset"),
    data: str = typer.Option(None, "--data", help="labelled data (CSV / folder); default: the run's validation split"),
    images_root: str = typer.Option(None, "--images-root", help="folder the data's image paths are relative to"),
    captions: int = typer.Option(8, "--captions", help="captions sampled per photo"),
    seed: int = typer.Option(FOOD.sampling.seed, help="sampling seed"),
    out: str = typer.Option(None, "--out", help="write the full report (JSON) here, and its pictures beside it"),
    modality_check: bool = typer.Option(True, help="also score with the photos swapped between examples"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, mps"),
) -> None:
    """Dish accuracy and kcal / nutrient MAE from generated captions, next to the always-the-mean baseline.

    Also draws confusion.png (true vs predicted dish) and kcal_scatter.png (predicted vs true kcal): beside --out;
    without it, in the --model folder when evaluating a run on its own validation split, else in ./eval-pictures.
    """
    import json
    from pathlib import Path

    from .train.evaluate import evaluate_labelled_data, format_report
    from .train.plots import write_eval_plots

    try:
        report = evaluate_labelled_data(model, data, images_root=images_root, n=captions, seed=seed, device=device,
                                        modality_check=modality_check, echo=typer.echo)
    except (OSError, ValueError, RuntimeError, KeyError) as err:  # as `_load` does for the inference commands
        typer.echo(f"error: cannot evaluate {model!r}: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(report))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        typer.echo(f"report: {out}")
    own_split = data is None and Path(model).is_dir()  # a run on its own validation split: the run folder
    pictures = Path(out).parent if out else Path(model) if own_split else Path("eval-pictures")
    for path in write_eval_plots(report, pictures):
        typer.echo(f"picture: {path}")


def _demo_config() -> str:
    """The packaged demo config: `rudolph-ft train` runs it from any folder (its data: `resolve_data_path`)."""
    from .train.config import DEMO_CONFIG

    return str(DEMO_CONFIG)


# ---- config commands (rudolph_ft/train/config.py) ------------------------------------------------------------
config_app = typer.Typer(help="The keys of a run config and the values a run would use.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def config_show(
    ctx: typer.Context,
    config: str = typer.Argument(None, help="run config YAML (default: the demo config `rudolph-ft train` runs)"),
) -> None:
    """Every key (type, default, help), then the config CONFIG + `section.key=value` overrides resolve to.

    Checked as `rudolph-ft train` checks it (exit status 2 with one line naming the key), touching nothing: no run
    folder, no data drawn.
    """
    import yaml

    from .train.config import ConfigError, format_keys, read_train_config

    overrides = list(ctx.args)
    if config is not None and "=" in config:  # the first override, not a file
        overrides.insert(0, config)
        config = None
    config = config if config is not None else _demo_config()
    try:
        resolved = read_train_config(config, overrides)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_keys())
    typer.echo(f"\n# resolved: {config}" + "".join(f" {item}" for item in overrides))
    text = yaml.safe_dump(resolved.to_dict(), allow_unicode=True, sort_keys=False, default_flow_style=None)
    typer.echo(text, nl=False)


# ---- inference commands (rudolph_ft/pipelines, rudolph_ft/app.py) ---------------------------------------------
# Every command takes --model (a preset, an official checkpoint, a model directory or a training run directory) and
# the same loading options; IMG... are image files, read in groups: an unreadable one is reported and skipped, and
# the exit status is 1 at the end when any was.
_MODEL = typer.Option("350M", "--model", "-m", help="preset name, official checkpoint, model directory or training "
                      "run directory")
_TOKENIZER = typer.Option(None, "--tokenizer", help="text tokenizer (bpe.model file or name) instead of the model's")
_VQGAN = typer.Option(None, "--vqgan", help="VQGAN (folder, weights file or preset name) instead of the model's")
_DEVICE = typer.Option("auto", "--device", help="auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:1, mps")
_OFFLINE = typer.Option(False, "--offline", help="never download: fail at once, saying what is missing")
_STYLE = typer.Option("auto", "--style", help="prompt and scoring conventions: rc4 (the article's), rc10 (task tokens "
                      "of the official v2 checkpoints) or auto (rc10 for an official preset that has them, else rc4)")
_IMAGES = typer.Argument(..., help="image files")
_SEED = typer.Option(FOOD.sampling.seed, "--seed", help="sampling seed: the same seed gives the same output")
_BATCH_SIZE = typer.Option(16, "--batch-size", help="sequences per forward pass")
_JSON = typer.Option(False, "--json", help="print the results as JSON")
_TEMPLATE_CAPTION = typer.Option(FOOD.prompt, "--template", help="start of every caption")
_TOP_K = typer.Option(FOOD.sampling.top_k, "--top-k", help="sample among the k most likely tokens (1: greedy)")
_TOP_P = typer.Option(FOOD.sampling.top_p, "--top-p", help="then among the most likely tokens holding this probability")
_TEMPERATURE = typer.Option(FOOD.sampling.temperature, "--temperature", help="sampling temperature")


def _load(model: str, tokenizer: str | None, vqgan: str | None, device: str | None, offline: bool, style: str):
    """(components, resolved style); a model that cannot be loaded ends the command with status 2."""
    from .components import load_components
    from .pipelines.prompts import resolve_style

    try:
        components = load_components(model, tokenizer=tokenizer, vqgan=vqgan, device=device, offline=offline or None)
        return components, resolve_style(style, model, components.model.config)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        typer.echo(f"error: cannot load model {model!r}: {err}", err=True)
        raise typer.Exit(2) from None


def _image_groups(paths: list[str], size: int, failures: list):
    """Yield [(path, PIL image)] groups of readable files; unreadable ones are reported and added to `failures`."""
    from .pipelines.inputs import open_images

    for start in range(0, len(paths), size):
        images, errors = open_images(paths[start:start + size])
        for error in errors:
            typer.echo(f"error: {error}", err=True)
        failures.extend({"image": error.path, "error": str(error)} for error in errors)
        if images:
            yield images


def _finish(results: list, failures: list, json_output: bool) -> None:
    import json

    if json_output:
        typer.echo(json.dumps(results + failures, ensure_ascii=False, indent=2))
    if failures:
        typer.echo(f"{len(failures)} image(s) could not be read", err=True)
        raise typer.Exit(1)


@app.command()
def caption(
    images: list[str] = _IMAGES,
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, style: str = _STYLE,
    template: str = _TEMPLATE_CAPTION,
    n: int = typer.Option(4, "-n", "--num", help="captions to sample per image"),
    top_k: int = _TOP_K, top_p: float = _TOP_P, temperature: float = _TEMPERATURE, seed: int = _SEED,
    batch_size: int = _BATCH_SIZE,
    rerank: bool = typer.Option(True, "--rerank/--no-rerank", help="order the captions by how well they explain the "
                                "image (the score printed: lower is better)"),
    json_output: bool = _JSON,
) -> None:
    """Caption photos: sample continuations of a template (the article's `generate_captions`)."""
    from .pipelines import generate_captions_batch, rerank_by_image

    components, style = _load(model, tokenizer, vqgan, device, offline, style)
    results, failures = [], []
    for group in _image_groups(images, max(1, batch_size // max(n, 1)), failures):
        samples = generate_captions_batch(components, [image for _, image in group], template, n, top_k=top_k,
                                          top_p=top_p, temperature=temperature, seed=seed, batch_size=batch_size,
                                          style=style)
        for (path, _), sampled in zip(group, samples, strict=True):
            if rerank:
                ranked = rerank_by_image(components, sampled.unique(), sampled.codes, style=style,
                                         batch_size=batch_size)
                captions = [{"text": r.text, "score": r.score} for r in ranked]
            else:
                captions = [{"text": text} for text in sampled.unique()]
            results.append({"image": path, "captions": captions})
            if not json_output:
                typer.echo(path)
                for item in captions:
                    typer.echo(f"  {item['score']:10.3f}  {item['text']}" if rerank else f"  {item['text']}")
    _finish(results, failures, json_output)


@app.command()
def predict(
    images: list[str] = _IMAGES,
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, style: str = _STYLE,
    template: str = _TEMPLATE_CAPTION,
    n: int = typer.Option(FOOD.captions_per_photo, "-n", "--num", help="captions to sample per image"),
    best: int = typer.Option(FOOD.best, "--best", help="best-ranked captions the answer is taken from"),
    top_k: int = _TOP_K, top_p: float = _TOP_P, temperature: float = _TEMPERATURE, seed: int = _SEED,
    batch_size: int = _BATCH_SIZE, json_output: bool = _JSON,
) -> None:
    """Dish, kcal and nutrients of food photos, read from their best captions (with the captions as evidence)."""
    from .pipelines import predict_nutrition_batch

    components, style = _load(model, tokenizer, vqgan, device, offline, style)
    results, failures = [], []
    for group in _image_groups(images, max(1, batch_size // max(n, 1)), failures):
        predictions = predict_nutrition_batch(components, [image for _, image in group], template=template, n=n,
                                              best=best, top_k=top_k, top_p=top_p, temperature=temperature,
                                              seed=seed, batch_size=batch_size, style=style)
        for (path, _), prediction in zip(group, predictions, strict=True):
            prediction.image = path
            results.append(prediction.to_dict())
            if not json_output:
                typer.echo(f"{path}: {prediction.summary()}")
                for evidence in prediction.evidence[:best]:
                    typer.echo(f"  {evidence.score:10.3f}  {evidence.text}")
    _finish(results, failures, json_output)


@app.command()
def classify(
    images: list[str] = _IMAGES,
    classes: str = typer.Option(..., "--classes", help="comma-separated class names, e.g. борщ,шаурма,плов"),
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, style: str = _STYLE,
    template: str = typer.Option(FOOD.class_template, "--template", help="how a class becomes a caption ({} = the "
                                 "class)"),
    batch_size: int = _BATCH_SIZE, json_output: bool = _JSON,
) -> None:
    """Zero-shot classification: the class whose caption the model finds most likely for each photo."""
    from .pipelines import zero_shot_classify

    names = [name.strip() for name in classes.split(",") if name.strip()]
    if not names or "{}" not in template:
        typer.echo("error: give at least one class name (--classes a,b,c) and a --template with {}", err=True)
        raise typer.Exit(2)
    components, style = _load(model, tokenizer, vqgan, device, offline, style)
    results, failures = [], []
    for group in _image_groups(images, batch_size, failures):
        for path, image in group:
            result = zero_shot_classify(components, image, names, template, style=style, batch_size=batch_size)
            results.append({"image": path, **result.to_dict()})
            if not json_output:
                typer.echo(f"{path}: {result.label}")
                ranked = sorted(zip(names, result.probabilities, result.perplexities, strict=True),
                                key=lambda item: item[2])
                for name, probability, perplexity in ranked:
                    typer.echo(f"  {probability:7.4f}  ppl {perplexity:12.3f}  {name}")
    _finish(results, failures, json_output)


_TASK_SEED = typer.Option(BASELINE_SAMPLING.seed, "--seed", help=_SEED.help)
_TASK_TOP_K = typer.Option(None, "--top-k", help="sample among the k most likely tokens (1: greedy; default: the "
                           f"FBC2 baseline's {BASELINE_SAMPLING.top_k})")
_TASK_TOP_P = typer.Option(None, "--top-p", help="then among the most likely tokens holding this probability "
                           f"(default {BASELINE_SAMPLING.top_p})")
_TASK_TEMPERATURE = typer.Option(None, "--temperature", help=f"sampling temperature (default "
                                 f"{BASELINE_SAMPLING.temperature})")
_OPTIONS = typer.Option(None, "--options", help="answer options separated by ';' (the model names one, e.g. "
                        "'борщ; плов')")


def _split_options(options: str | None) -> list[str] | None:
    return [o.strip() for o in options.split(";") if o.strip()] if options else None


def _open_photo(photo: str):
    """The photo, opened before the model loads: a wrong path fails at once."""
    from .pipelines.inputs import open_images

    images, errors = open_images([photo])
    if errors:
        typer.echo(f"error: {errors[0]}", err=True)
        raise typer.Exit(1)
    return images[0][1]


def _run_task(solve, loaded: tuple, record: dict, json_output: bool, **sampling) -> None:
    """Load the model, call `solve(components, **sampling)` (unset sampling options: the task's defaults) and print
    its text, or `record` with it as "answer" (--json); "no task tokens" warnings as one plain line on stderr."""
    import warnings

    components, _ = _load(*loaded, "auto")
    sampling = {k: v for k, v in sampling.items() if v is not None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = solve(components, **sampling)
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    if json_output:
        import json

        text = json.dumps({**record, "answer": text}, ensure_ascii=False)
    typer.echo(text)


@app.command()
def ask(
    photo: str = typer.Argument(..., help="image file"),
    question: str = typer.Argument(..., help="the question, e.g. 'сколько здесь калорий?'"),
    options: str | None = _OPTIONS,
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, seed: int = _TASK_SEED, top_k: int | None = _TASK_TOP_K,
    top_p: float | None = _TASK_TOP_P, temperature: float | None = _TASK_TEMPERATURE, json_output: bool = _JSON,
) -> None:
    """Answer a question about a photo (visual QA, the FBC2 model's task; other models get it as plain text)."""
    from .pipelines import answer

    image, choices = _open_photo(photo), _split_options(options)
    _run_task(lambda c, **kw: answer(c, image, question, choices, seed=seed, **kw),
              (model, tokenizer, vqgan, device, offline),
              {"image": photo, "question": question, "options": choices}, json_output,
              top_k=top_k, top_p=top_p, temperature=temperature)


@app.command("ask-text")
def ask_text(
    question: str = typer.Argument(..., help="the question, or a math problem ('6 умножить на y - 54 это -72, "
                                   "для y.')"),
    context: str | None = typer.Option(None, "--context", help="the text the question is about (text QA); without "
                                       "it: math QA"),
    options: str | None = _OPTIONS,
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, seed: int = _TASK_SEED, top_k: int | None = _TASK_TOP_K,
    top_p: float | None = _TASK_TOP_P, temperature: float | None = _TASK_TEMPERATURE, json_output: bool = _JSON,
) -> None:
    """Answer a question about a text (text QA, --context) or solve a math problem (math QA)."""
    from .pipelines import answer_text

    choices = _split_options(options)
    _run_task(lambda c, **kw: answer_text(c, question, context, choices, seed=seed, **kw),
              (model, tokenizer, vqgan, device, offline),
              {"question": question, "context": context, "options": choices}, json_output,
              top_k=top_k, top_p=top_p, temperature=temperature)


@app.command("read")
def read(
    photo: str = typer.Argument(..., help="image file with text in it (a sign, a label)"),
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, seed: int = _TASK_SEED, top_k: int | None = _TASK_TOP_K,
    top_p: float | None = _TASK_TOP_P, temperature: float | None = _TASK_TEMPERATURE, json_output: bool = _JSON,
) -> None:
    """Read the text written in a photo (text recognition, an FBC2 task)."""
    from .pipelines import read_text

    image = _open_photo(photo)
    _run_task(lambda c, **kw: read_text(c, image, seed=seed, **kw), (model, tokenizer, vqgan, device, offline),
              {"image": photo}, json_output, top_k=top_k, top_p=top_p, temperature=temperature)


@app.command("continue")
def continue_(
    text: str = typer.Argument(..., help="the start of a text, e.g. 'борщ варят из'"),
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, seed: int = _TASK_SEED, top_k: int | None = _TASK_TOP_K,
    top_p: float | None = _TASK_TOP_P, temperature: float | None = _TASK_TEMPERATURE, json_output: bool = _JSON,
) -> None:
    """Continue a text (T2T): prints the text with its continuation."""
    from .pipelines import continue_text

    _run_task(lambda c, **kw: continue_text(c, text, seed=seed, **kw), (model, tokenizer, vqgan, device, offline),
              {"text": text}, json_output, top_k=top_k, top_p=top_p, temperature=temperature)


@app.command()
def generate(
    text: str = typer.Argument(..., help="what to draw, e.g. 'борщ со сметаной'"),
    out: str = typer.Option("generated.png", "--out", "-o", help="PNG file for the grid of images"),
    n: int = typer.Option(4, "-n", "--num", help="images to draw"),
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, style: str = _STYLE,
    top_k: int = typer.Option(768, "--top-k", help="sample among the k most likely codes (1: greedy)"),
    top_p: float = typer.Option(0.99, "--top-p", help="then among the most likely codes holding this probability"),
    temperature: float = typer.Option(1.0, "--temperature", help="sampling temperature"),
    seed: int = typer.Option(42, "--seed", help="sampling seed: the same seed gives the same images"),
    batch_size: int = typer.Option(8, "--batch-size", help="images decoded together"),
    rerank: bool = typer.Option(False, "--rerank", help="order the images best first by how well they fit the text"),
    columns: int | None = typer.Option(None, "--columns", help="images per grid row (default: about square)"),
) -> None:
    """Draw images from a text (image codes sampled after the text, decoded by the VQGAN) into a PNG grid."""
    from .pipelines import generate_images

    components, style = _load(model, tokenizer, vqgan, device, offline, style)
    result = generate_images(components, text, n, top_k=top_k, top_p=top_p, temperature=temperature, seed=seed,
                             batch_size=batch_size, rerank=rerank, style=style)
    path = result.save_grid(out, columns)
    for ranked in result.ranking:
        typer.echo(f"  image {ranked.index}: score {ranked.score:.3f}")
    typer.echo(f"wrote {len(result.images)} images to {path}")


@app.command()
def serve(
    model: str = _MODEL, tokenizer: str | None = _TOKENIZER, vqgan: str | None = _VQGAN, device: str | None = _DEVICE,
    offline: bool = _OFFLINE, style: str = _STYLE,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0 exposes the demo to your "
                             "network)"),
    port: int = typer.Option(7860, "--port", help="port to listen on"),
) -> None:
    """Web demo (Gradio): nutrients of an uploaded food photo, zero-shot classes, text to image."""
    from .app import build_demo, example_photos

    _check_port_free(host, port)  # before the model loads: a second `serve` on a busy port fails at once
    components, style = _load(model, tokenizer, vqgan, device, offline, style)
    try:
        demo = build_demo(components, style=style, title=f"rudolph-ft: {model}",
                          examples=example_photos(model, image_size=components.model.config.image_size))
    except ImportError as err:
        typer.echo(f"error: the web demo needs gradio ({err}); install it with `pip install gradio`", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"serving {model} ({components.device}) on http://{host}:{port} (Ctrl-C stops)")
    try:
        demo.launch(server_name=host, server_port=port)
    except OSError as err:  # taken between the check and the launch, or an address this machine does not have
        typer.echo(f"error: cannot listen on {host}:{port} ({err}); choose another port with --port", err=True)
        raise typer.Exit(2) from None


def _check_port_free(host: str, port: int) -> None:
    """End the command with status 2 when `host:port` cannot be listened on (e.g. another `serve` holds it)."""
    import errno
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
            probe.bind((host, port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            message = (f"port {port} on {host} is taken (another `rudolph-ft serve`?); stop that server or choose "
                       f"another port with --port, e.g. --port {port + 1 if port < 65535 else 7860}")
        else:
            message = f"cannot listen on {host}:{port} ({err}); choose another --host or --port"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app()
