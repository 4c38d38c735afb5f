"""Evaluation: validation loss during training; dish accuracy and nutrient errors from generated captions.

`evaluate_predictions` scores a model the way a user meets it: sample captions for each photo, rerank, parse
`блюдо: …; белков: …; жиров: …; углеводов: …; ккал: …;`, aggregate, and compare with the labels. It reports the
always-the-mean baseline (majority dish, mean nutrients) next to the model, and the modality check of the course
notebook: the same metrics with every photo swapped for another example's, showing how much the answer depends
on the picture.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

import torch

from ..tasks import FOOD

__all__ = ["validation_loss", "task_validation_losses", "evaluate_predictions", "evaluate_labelled_data",
           "evaluate_during_training", "format_report", "dish_confusion", "per_dish_scores", "NUTRIENTS", "NO_DISH"]

#: prediction field -> label column of the article's CSV, in report order (`{"kcal": "kkal", "protein": "belok",
#: "fat": "fats", "carbs": "uglevod"}`: the food task's `metric_columns`)
NUTRIENTS = FOOD.metric_columns
#: the confusion matrix's column for photos whose captions named no dish
NO_DISH = "(no dish)"


@torch.no_grad()
def validation_loss(model, examples, *, l_text_seq_length: int, loss_weights, batch_size: int, device) -> dict:
    """Mean segment losses over the validation examples (argmax image codes, eval mode: no dropout)."""
    from .data import assemble_batch

    model.eval()
    totals, count = {"val_loss": 0.0, "val_l_text_loss": 0.0, "val_image_loss": 0.0, "val_r_text_loss": 0.0}, 0
    for start in range(0, len(examples), batch_size):
        indices = list(range(start, min(start + batch_size, len(examples))))
        input_ids = assemble_batch(examples, indices, l_text_seq_length=l_text_seq_length, seed=0, step=0)
        out = model(input_ids.to(device), loss_weights=tuple(loss_weights))
        for name in totals:
            totals[name] += getattr(out, name[len("val_"):]).item() * len(indices)
        count += len(indices)
    return {k: v / max(count, 1) for k, v in totals.items()}


@torch.no_grad()
def task_validation_losses(model, examples, layout, loss_weights, *, image_end: int, batch_size: int,
                           device) -> dict:
    """Each task's mean weighted loss on multitask rows (tasks.val_path), keyed `val_task_loss/<task>`.

    As a training step computes a task's loss (`Trainer._task_groups`), without its randomness: eval mode (no
    dropout), no task-token dropout; one forward per `batch_size` rows of a task with `loss_weights(task)`, the
    batches' losses averaged by their rows.

    Args:
        examples: the encoded rows (`TaskExamples`); `layout`: the run's `TaskLayout`.
        loss_weights: task name -> its (left, image, right) loss weights.
        image_end: where the right text starts (a batch without any right text, generation, stops there).
    """
    import random

    from .data import assemble_task_batch, without_empty_right_text
    from .metrics import VAL_TASK_LOSS_PREFIX

    model.eval()
    rows_of: dict[str, list[int]] = {}
    for i, name in enumerate(examples.tasks):
        rows_of.setdefault(name, []).append(i)
    losses = {}
    for name in sorted(rows_of):
        rows, total = rows_of[name], 0.0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids = assemble_task_batch(examples, chunk, layout, rng=random.Random(0), token_dropout=0.0)
            out = model(without_empty_right_text(ids, image_end).to(device), loss_weights=tuple(loss_weights(name)))
            total += out.loss.item() * len(chunk)
        losses[f"{VAL_TASK_LOSS_PREFIX}{name}"] = total / len(rows)
    return losses


def _targets(meta: dict) -> dict:
    values = meta.get("meta", meta)
    target = {"dish": str(values.get(FOOD.schema.dish_column, "")).strip().lower() or None}
    for field, column in NUTRIENTS.items():
        target[field] = float(values[column]) if values.get(column) not in (None, "") else None
    return target


def _scores(predictions: Sequence[dict], targets: Sequence[dict], fallback: dict) -> dict:
    """Dish accuracy and nutrient MAE; a missing prediction counts as the fallback (the baseline's answer)."""
    result = {"n": len(targets)}
    dishes = [(p.get("dish"), t["dish"]) for p, t in zip(predictions, targets, strict=True) if t["dish"]]
    if dishes:
        result["dish_accuracy"] = sum(p == t for p, t in dishes) / len(dishes)
    for field in NUTRIENTS:
        pairs = [(p.get(field) if p.get(field) is not None else fallback[field], t[field])
                 for p, t in zip(predictions, targets, strict=True) if t[field] is not None]
        if pairs:
            result[f"{field}_mae"] = sum(abs(p - t) for p, t in pairs) / len(pairs)
    mean_kcal = fallback.get("kcal")
    if "kcal_mae" in result and mean_kcal:
        result["kcal_mae_pct_of_mean"] = 100 * result["kcal_mae"] / mean_kcal
    result["parsed_fraction"] = sum(p.get("kcal") is not None and p.get("dish") is not None
                                    for p in predictions) / max(len(predictions), 1)
    return result


def _baseline_answer(reference_targets: Sequence[dict]) -> dict:
    dishes = Counter(t["dish"] for t in reference_targets if t["dish"])
    answer = {"dish": dishes.most_common(1)[0][0] if dishes else None}
    for field in NUTRIENTS:
        values = [t[field] for t in reference_targets if t[field] is not None]
        answer[field] = statistics.fmean(values) if values else 0.0
    return answer


def dish_confusion(examples: Sequence[dict]) -> dict:
    """Counts of (true dish, predicted dish) over the examples with a true dish.

    Returns:
        {"labels": names sorted (true and predicted dishes, NO_DISH last when some photo got none),
        "counts": counts[i][j] = photos of dish labels[i] predicted as labels[j]}.
    """
    pairs = [(e["target"]["dish"], e["predicted"].get("dish") or NO_DISH) for e in examples if e["target"]["dish"]]
    names = {name for pair in pairs for name in pair}
    labels = sorted(names - {NO_DISH}) + ([NO_DISH] if NO_DISH in names else [])
    index = {name: i for i, name in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for true, predicted in pairs:
        counts[index[true]][index[predicted]] += 1
    return {"labels": labels, "counts": counts}


def per_dish_scores(examples: Sequence[dict], fallback: dict) -> list[dict]:
    """Photos, dish accuracy and kcal MAE per true dish, most photos first: `_scores` of each dish's examples (a
    missing prediction counts as `fallback`, the baseline's answer, as in the overall scores)."""
    by_dish: dict[str, list[dict]] = {}
    for example in examples:
        if example["target"]["dish"]:
            by_dish.setdefault(example["target"]["dish"], []).append(example)
    rows = []
    for dish, group in by_dish.items():
        scores = _scores([e["predicted"] for e in group], [e["target"] for e in group], fallback)
        rows.append({"dish": dish, "n": len(group), "dish_accuracy": scores["dish_accuracy"],
                     "kcal_mae": scores.get("kcal_mae")})
    return sorted(rows, key=lambda row: (-row["n"], row["dish"]))


def evaluate_predictions(components, images: Sequence, metas: Sequence[dict], *,
                         baseline_from: Sequence[dict] | None = None, modality_check: bool = True,
                         n: int = 8, best: int = FOOD.best, seed: int = FOOD.sampling.seed,
                         template: str = FOOD.prompt, batch_size: int = 16) -> dict:
    """Score nutrition predictions on labelled photos.

    Args:
        components: model + tokenizer + VQGAN.
        images: photos (paths, PIL images or tensors); `metas`: their labels (the article's columns).
        baseline_from: labels the always-the-mean baseline is computed from (default: the evaluated labels).
        modality_check: also score with each photo replaced by another example's photo.
        n, best, seed, template, batch_size: caption sampling (see `predict_nutrition`; the other sampling
            settings are the food task's defaults, `rudolph_ft.tasks.FOOD.sampling`).

    Returns:
        {"model": scores, "baseline": scores, "images_swapped": scores, "examples": [...], "baseline_answer":
        the baseline's dish and nutrients, "confusion": `dish_confusion`, "per_dish": `per_dish_scores`}; scores
        hold dish_accuracy, kcal/protein/fat/carbs MAE, kcal MAE in % of the mean kcal and the parsed fraction.
    """
    from ..pipelines.predict import predict_nutrition_batch

    targets = [_targets(m) for m in metas]
    fallback = _baseline_answer([_targets(m) for m in baseline_from] if baseline_from else targets)
    options = {"n": n, "best": best, "seed": seed, "template": template, "batch_size": batch_size}
    predictions = [p.to_dict() for p in predict_nutrition_batch(components, list(images), **options)]
    report = {"model": _scores(predictions, targets, fallback),
              "baseline": _scores([fallback] * len(targets), targets, fallback)}
    if modality_check and len(images) > 1:
        swapped = [images[j] for j in _other_dish_partners([t.get("dish") for t in targets])]
        swapped_predictions = [p.to_dict() for p in predict_nutrition_batch(components, swapped, **options)]
        report["images_swapped"] = _scores(swapped_predictions, targets, fallback)
    report["examples"] = [{"target": t, "predicted": {k: p.get(k) for k in ("dish", *NUTRIENTS)},
                           "best_caption": (p.get("evidence") or [{}])[0].get("text")}
                          for t, p in zip(targets, predictions, strict=True)]
    report["baseline_answer"] = fallback
    report["confusion"] = dish_confusion(report["examples"])
    report["per_dish"] = per_dish_scores(report["examples"], fallback)
    return report


def evaluate_labelled_data(model: str, data: str | None = None, *, images_root: str | None = None,
                           device: str | None = None, echo=print, **options) -> dict:
    """`evaluate_predictions` for a model (run dir, model dir, preset) on labelled data.

    Without `data`, a training run is evaluated on its own validation split (from its run_config.yaml), with
    the baseline taken from its training split. `device`: as `load_components` takes it (`auto`, `cpu`, `cuda`, ...).
    """
    from pathlib import Path

    from ..components import load_components
    from ..data import CaptionedImageDataset
    from ..data.config import config_for
    from ..hub import resolve_model_dir

    # echo: says when an unfinished run resolves to a checkpoint
    components = load_components(model, device=device, echo=echo)
    image_size = components.model.config.image_size
    baseline = None
    if data is None:
        from .config import load_train_config
        from .prepare import run_dataset

        run_config = resolve_model_dir(model) / "run_config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(f"{model}: no run_config.yaml to find its validation split; pass --data")
        train_set, dataset = run_dataset(load_train_config(run_config).data, image_size).split()
        baseline = [train_set.describe(i) for i in range(len(train_set))]
    else:
        dataset = CaptionedImageDataset(config_for(data, images_root, image_size=image_size))
    if dataset.report.excluded:
        echo(dataset.report.summary())
    if len(dataset) == 0:
        raise ValueError(f"{data or model}: no usable labelled rows to evaluate")
    echo(f"evaluating {len(dataset)} photos with {Path(str(model))}")
    metas = [dataset.describe(i) for i in range(len(dataset))]
    images = [str(dataset.record(i).image_path) for i in range(len(dataset))]
    return evaluate_predictions(components, images, metas, baseline_from=baseline, **options)


def format_report(report: dict, *, per_dish: bool = True) -> str:
    """A small table: model vs baseline vs images swapped; then photos, accuracy and kcal MAE per dish."""
    columns = [c for c in ("model", "baseline", "images_swapped") if c in report]
    rows = [("dish accuracy", "dish_accuracy", ".3f"), ("kcal MAE", "kcal_mae", ".1f"),
            ("kcal MAE, % of mean", "kcal_mae_pct_of_mean", ".1f"), ("protein MAE", "protein_mae", ".2f"),
            ("fat MAE", "fat_mae", ".2f"), ("carbs MAE", "carbs_mae", ".2f"),
            ("captions parsed", "parsed_fraction", ".2f")]
    lines = [f"{'metric':<22}" + "".join(f"{c:>16}" for c in columns)]
    for label, key, spec in rows:
        if any(key in report[c] for c in columns):
            lines.append(f"{label:<22}" + "".join(
                f"{format(report[c][key], spec) if key in report[c] else '-':>16}" for c in columns))
    if per_dish and report.get("per_dish"):
        lines += ["", _format_per_dish(report["per_dish"])]
    return "\n".join(lines)


def _format_per_dish(rows: Sequence[dict], limit: int = 30) -> str:
    """Per-dish photos, accuracy and kcal MAE (the `limit` most common dishes; the JSON report has them all)."""
    width = max(len("dish"), *(len(row["dish"]) for row in rows[:limit]))
    lines = [f"{'dish':<{width}}{'photos':>8}{'accuracy':>10}{'kcal MAE':>10}"]
    for row in rows[:limit]:
        mae = "-" if row["kcal_mae"] is None else f"{row['kcal_mae']:.1f}"
        lines.append(f"{row['dish']:<{width}}{row['n']:>8}{row['dish_accuracy']:>10.2f}{mae:>10}")
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more dishes (all in the JSON report's per_dish)")
    return "\n".join(lines)


def _other_dish_partners(dishes: list) -> list[int]:
    """For each example, the index of the photo that replaces it in the modality check: the next one (cyclically,
    starting half the list away) of another dish, so that a table sorted by dish is not checked against photos of
    the same dish; the next example when every example has one dish."""
    n = len(dishes)
    partners = []
    for i in range(n):
        candidates = [(i + n // 2 + k) % n for k in range(n)]
        partners.append(next((j for j in candidates if j != i and dishes[j] != dishes[i]), (i + 1) % n))
    return partners


def evaluate_during_training(trainer, final: bool) -> dict:
    """Validation loss (every `eval.every` steps and at the end) and, at the end, the caption metrics."""
    cfg, prepared = trainer.config, trainer.prepared
    task_val = getattr(trainer, "task_val_data", None)  # a multitask run's tasks.val_path rows, encoded
    if len(prepared.val) == 0 and task_val is None:
        return {}
    model = trainer.accelerator.unwrap_model(trainer.model)
    row = {"step": trainer.progress.step}
    if len(prepared.val):
        row.update(validation_loss(
            model, prepared.val, l_text_seq_length=prepared.l_text_seq_length, loss_weights=cfg.train.loss_weights,
            batch_size=cfg.train.batch_size, device=trainer.accelerator.device))
    if task_val is not None:
        image_end = prepared.l_text_seq_length + prepared.components.model.config.image_seq_length
        row.update(task_validation_losses(model, task_val, trainer.task_layout, trainer._task_weights,
                                          image_end=image_end, batch_size=cfg.train.batch_size,
                                          device=trainer.accelerator.device))
    trainer.metrics.log(row)
    trainer.echo(_validation_line(row))
    if len(prepared.val) == 0:
        return row
    components = trainer._components(device=trainer.accelerator.device)  # (under FSDP: gathered, by every process)
    if not trainer.accelerator.is_main_process:
        return row
    images = [m["image_path"] for m in prepared.val.meta]
    if not final:  # a few fixed validation photos, captioned at each evaluation
        from ..pipelines.captions import generate_captions_batch

        samples = generate_captions_batch(components, images[: cfg.eval.samples], cfg.eval.template, n=1,
                                          seed=cfg.train.seed)
        for path, sample in zip(images, samples, strict=False):
            trainer.echo(f"  {path}: {sample.texts[0]}")
        trainer.metrics.log({"step": row["step"], "samples": [s.texts[0] for s in samples]})
        return row
    report = evaluate_predictions(components, images, prepared.val.meta, baseline_from=prepared.train.meta,
                                  n=cfg.eval.captions_per_image, template=cfg.eval.template, seed=cfg.train.seed)
    trainer.echo("evaluation on the validation split:\n" + format_report(report))
    return {**row, **report}


def _validation_line(row: dict) -> str:
    """"step N: validation loss ... (right text ...); per task: vqa ..., ..." for the log."""
    from .metrics import VAL_TASK_LOSS_PREFIX

    parts = []
    if "val_loss" in row:
        parts.append(f"validation loss {row['val_loss']:.4f} (right text {row['val_r_text_loss']:.4f})")
    tasks = [f"{key.removeprefix(VAL_TASK_LOSS_PREFIX)} {value:.4f}" for key, value in row.items()
             if key.startswith(VAL_TASK_LOSS_PREFIX)]
    if tasks:
        parts.append("validation loss per task (tasks.val_path): " + ", ".join(tasks))
    return f"step {row['step']}: " + "; ".join(parts)
