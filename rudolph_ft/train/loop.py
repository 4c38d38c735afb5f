"""The training loop: `Trainer(config).run()` fine-tunes RuDOLPH with the article's recipe as defaults.

Device placement, mixed precision and multi-process data parallelism come from `accelerate`
(`accelerate launch -m rudolph_ft train ...`). A run directory holds everything needed to resume
(`resume_command(RUN)`, which `train(resume=RUN)` runs):

    RUN/run_config.yaml   the config      RUN/metrics.jsonl, metrics.csv, loss_curve.png   per-step metrics
    RUN/bpe.model         a tokenizer learned from the captions (when configured)
    RUN/checkpoints/step-N/   model directory + training state      RUN/final/   the trained model directory
RUN/run_config.yaml is written when a run starts (or resumes); every checkpoint and final/ hold a copy too.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import shlex
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from pathlib import Path

import torch

from ..components import Components, save_components
from ..io import FolderLock, atomic_write
from ..model.rudolph import weighted_loss
from .checkpoint import (
    STATE_NAME,
    Progress,
    commit_checkpoint,
    latest_checkpoint,
    load_rng,
    load_training_state,
    new_checkpoint_folder,
    progress_dict,
    remove_debris,
    restore_rng,
    save_rng,
)
from .config import ConfigError, TrainConfig, load_train_config
from .data import assemble_batch, balanced_order, batch_order
from .distributed import (
    fsdp_requested,
    full_state_dict,
    largest_weight,
    load_sharded_optimizer,
    save_sharded_optimizer,
    shard_model,
)
from .freeze import apply_freeze, freeze_table
from .metrics import DivergenceWatch, MetricsLog
from .optim import build_optimizer, build_scheduler
from .plots import TASK_LOSS_PREFIX
from .prepare import prepare_run

__all__ = ["Trainer", "TrainingStopped", "train", "resume_command"]

RUN_CONFIG = "run_config.yaml"


def resume_command(run_dir: str | Path, processes: int = 1) -> str:
    """The command that continues the run in `run_dir` (what `train(resume=run_dir)` does), quoted for a shell;
    with `processes` > 1 launched as that many processes on this machine, as the run was."""
    resume = f"train --resume {shlex.quote(str(run_dir))}"
    return f"torchrun --standalone --nproc_per_node {processes} -m rudolph_ft {resume}" if processes > 1 \
        else f"rudolph-ft {resume}"


class TrainingStopped(RuntimeError):
    """Training stopped before its end (signal or non-finite loss); the message says how to go on."""


class Trainer:
    """Fine-tunes a RuDOLPH model as `config` says; `run()` returns a summary dict.

    Args:
        config: the run configuration.
        resume: continue the newest checkpoint of `config.output_dir` (per-step losses continue bitwise on CPU).
        on_step: called after every optimizer step with (trainer, metrics dict); may call `request_stop()`.
        echo: where progress messages go (default: print).
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False,
                 on_step: Callable[[Trainer, dict], None] | None = None, echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.run_dir = Path(config.output_dir)
        self.resume = resume
        self.on_step = on_step
        self.accelerator = self._make_accelerator()
        # FSDP shards the model across processes; with one process there is nothing to shard
        self.fsdp = fsdp_requested(config.train.strategy) and self.accelerator.num_processes > 1
        if self.fsdp:  # (asked by accelerate's FSDP config) saved in run_config.yaml, so that a resume shards too
            config.train.strategy = "fsdp"
        self.echo = echo if self.accelerator.is_main_process else (lambda message: None)
        if config.train.precision == "fp16" and self.accelerator.scaler is None and not self.fsdp:
            self.echo("note: train.precision=fp16 needs a CUDA GPU (autocast + loss scaler); here the run trains in "
                      "fp32. train.precision=bf16 is mixed precision on CPUs too")
        self._stop_reason: str | None = None
        self._saved_step = -1
        self.progress = Progress()

    def _make_accelerator(self):
        """Device placement, the process group and mixed precision (fp16: with its loss scaler)."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import InitProcessGroupKwargs

        state = AcceleratorState._shared_state
        if state and state.get("_mixed_precision") != self.config.train.precision:
            # accelerate keeps one precision per Python process; a second run in the same notebook or program may
            # ask for another. The process group (PartialState) is kept.
            AcceleratorState._reset_state(reset_partial_state=False)
        # the other processes wait in a collective while the main one prepares (first encode of a large data set):
        # longer than torch's default process-group timeout (10 min NCCL, 30 min gloo)
        waiting = InitProcessGroupKwargs(timeout=datetime.timedelta(hours=6))
        # without a GPU, cpu=True is what makes accelerate run several processes (torchrun) as gloo data parallel
        return Accelerator(mixed_precision=self.config.train.precision, cpu=not torch.cuda.is_available(),
                           kwargs_handlers=[waiting])

    # ---- public --------------------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the current step, save a checkpoint and stop (what Ctrl-C / SIGTERM do)."""
        self._stop_reason = reason

    def run(self) -> dict:
        """Train (or resume) holding the run folder's lock, so that a second run into it fails instead of mixing in."""
        lock = FolderLock(self.run_dir, hint="choose another output_dir", echo=self.echo)
        if self.accelerator.is_main_process:  # one lock per run, not one per process of a multi-process launch
            lock.acquire()  # FolderLockedError (a FileExistsError: the CLI exits 2) when another run holds it
        try:
            if self.accelerator.is_main_process:
                remove_debris(self.run_dir, echo=self.echo)  # what a killed save left: safe only while locked
            return self._run()
        finally:
            lock.release()

    def _run(self) -> dict:
        cfg = self.config
        checkpoint = self._checkpoint_to_resume()
        self._write_run_config()
        rank = self.accelerator.process_index
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every process (FSDP shards each one's copy)
        # each process its own python and BPE-dropout streams (process 0's as in a one-process run)
        random.seed(cfg.train.seed + 1_000_003 * rank)
        self.text_rng = random.Random(cfg.train.seed + 1_000_003 * rank)
        task_tables = self._read_task_tables()  # (before preparing: a bad table stops the run at once)
        self.prepared = prepare_run(cfg, self.run_dir, checkpoint, echo=self.echo, accelerator=self.accelerator)
        self.task_data, self.task_val_data = self._prepare_tasks(task_tables)
        # the training stream (dropout) starts here, whatever preparation drew (e.g. encoding cache misses)
        torch.manual_seed(cfg.train.seed * 7 + 1 + self.accelerator.process_index)
        model = self.prepared.components.model
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model = self._adapted(model, checkpoint)
        roles = apply_freeze(model, cfg.freeze)
        self.echo(freeze_table(model, roles))
        self._echo_memory_plan(model)
        if self.fsdp:
            if cfg.optim.name == "adam8bit":
                raise ValueError("optim.name=adam8bit (bitsandbytes) cannot step FSDP-sharded parameters: set "
                                 "optim.name=adamw with train.strategy=fsdp")
            model = shard_model(model, device=self.accelerator.device, precision=cfg.train.precision)
        optimizer = build_optimizer(model, roles, cfg.optim)
        self.batches_per_epoch = len(self._epoch_batches(0))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.train.grad_accum_steps)
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        scheduler = build_scheduler(optimizer, cfg.schedule, self.steps_per_epoch * cfg.train.epochs)
        if self.fsdp:  # sharded above; mixed precision is FSDP's policy, not autocast
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # not handed to accelerate, which steps it once per process; skipped fp16 steps are left out below
        self.scheduler = scheduler
        if checkpoint is not None:
            self._restore(checkpoint)
        self.metrics = MetricsLog(self.run_dir, enabled=self.accelerator.is_main_process, config=cfg,
                                  truncate_after=self.progress.step)
        with _stop_on_signals(self):
            self._train()
        return self._finish()

    # ---- the loop ------------------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of the epoch: each global batch split across processes."""
        cfg, acc = self.config.train, self.accelerator
        if self.task_data is not None and self.config.tasks.balanced:
            global_batches = balanced_order(self._task_names(), cfg.batch_size, cfg.seed, epoch)
        else:
            global_batches = batch_order(self._num_examples(), cfg.batch_size * acc.num_processes, cfg.seed, epoch,
                                         drop_last=acc.num_processes > 1)
        return [batch[acc.process_index::acc.num_processes] for batch in global_batches]

    def _train(self) -> None:
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(total=self.total_steps, initial=self.progress.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (cfg.logging.progress and self.accelerator.is_main_process))
        self.model.train()
        self.watch = DivergenceWatch(self._largest_weight())
        epoch, batches = None, []
        while self.progress.step < self.total_steps and self._stop_reason is None:
            if epoch != self.progress.epoch:
                epoch, batches = self.progress.epoch, self._epoch_batches(self.progress.epoch)
            if self.progress.batch_in_epoch >= len(batches):
                self.progress.epoch, self.progress.batch_in_epoch = self.progress.epoch + 1, 0
                continue
            group = batches[self.progress.batch_in_epoch:self.progress.batch_in_epoch + cfg.train.grad_accum_steps]
            metrics = self._optimizer_step(group)
            self.progress.batch_in_epoch += len(group)
            bar.update(1)
            if "non_finite" in metrics:
                self._non_finite(metrics)  # stops the run, unless train.nan_policy=skip
            else:
                self.watch.observe(metrics["step"], metrics["grad_norm"], self._largest_weight())
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                            samples_s=f"{metrics['samples_per_s']:.1f}")
            self._after_step(metrics)
        bar.close()

    def _adapted(self, model, checkpoint: Path | None):
        """finetune.method lora / qlora: the model with its adapters (fresh ones, or the resumed checkpoint's)."""
        cfg = self.config
        adapted = bool(getattr(model, "peft_config", None))
        self.adapter_base = None
        if cfg.finetune.method == "full":
            if adapted:
                raise ValueError(f"{checkpoint or cfg.model.name} holds LoRA adapters but finetune.method=full: resume "
                                 "it with its finetune.method, or merge it first (`rudolph-ft merge RUN --out DIR`)")
            return model
        from ..lora import BASE_NAME, LoraSettings, apply_lora, base_reference

        if self.fsdp:
            raise ValueError(f"finetune.method={cfg.finetune.method} trains with train.strategy=ddp: FSDP does not "
                             "shard adapters yet")
        if adapted:
            if checkpoint is None:
                raise ValueError(f"model.name={cfg.model.name} is a LoRA run: merge it into a full model first "
                                 "(`rudolph-ft merge RUN --out DIR`) and train adapters on that")
            self.adapter_base = json.loads((checkpoint / BASE_NAME).read_text(encoding="utf-8"))["base"]
            return model  # the checkpoint's adapters (and the base parameters trained with them), loaded by prepare
        if checkpoint is not None:
            raise ValueError(f"{checkpoint} holds a full model, not adapters: resume it with finetune.method=full")
        if not cfg.model.pretrained:
            raise ValueError(f"finetune.method={cfg.finetune.method} adapts a trained model: set model.pretrained=true "
                             "(a preset's published weights) or model.name to a trained model folder")
        self.adapter_base = base_reference(cfg.model.name)  # what the adapter belongs to (a folder: with its sha256)
        if cfg.finetune.method == "qlora" and self.accelerator.device.type == "cuda":
            model.to(self.accelerator.device)  # bitsandbytes quantizes where the weights are
        lora = cfg.lora
        return apply_lora(model, LoraSettings(method=cfg.finetune.method, r=lora.r, alpha=lora.alpha,
                                              dropout=lora.dropout, targets=list(lora.targets),
                                              quantize=lora.quantize))

    def _echo_memory_plan(self, model) -> None:
        """The memory plan's peak per device for this run (`rudolph-ft plan` prints the whole table)."""
        from .plan import memory_plan, peak_line

        plan = memory_plan(self.config, arch=model.config, device=self.accelerator.device.type)
        self.echo(peak_line(plan, self.accelerator.num_processes, "fsdp" if self.fsdp else "ddp"))

    def _largest_weight(self) -> float:
        return largest_weight(self.model, sharded=self.fsdp)

    def _agree_on_stop(self) -> None:
        """A stop asked of any process stops all of them after the same step (a signal reaches them at different
        times; one that stopped alone would leave the others waiting in the next step's collectives)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        flag = torch.tensor([1.0 if self._stop_reason is not None else 0.0], device=acc.device)
        if acc.reduce(flag, reduction="sum").item() > 0 and self._stop_reason is None:
            self._stop_reason = "another process was asked to stop"

    def _optimizer_step(self, group: list[list[int]]) -> dict:
        """One optimizer step over `group` (grad_accum_steps batches of this process).

        The objective is the one-process objective of the global batch (all micro-batches of all processes): the
        left-text and image losses are means over examples, the right-text loss a mean over the scored (non-pad)
        tokens of the whole global batch, so N processes or K accumulated batches give the same step as one
        process with the whole batch.
        """
        if self.task_data is not None:
            return self._multitask_step(group)
        cfg, acc, model = self.config, self.accelerator, self.model
        start = time.perf_counter()
        totals = {"loss": 0.0, "l_text_loss": 0.0, "image_loss": 0.0, "r_text_loss": 0.0}
        samples = sum(len(b) for b in group)
        batches = [self._batch(indices) for indices in group]
        image_end = self.prepared.l_text_seq_length + self.prepared.components.model.config.image_seq_length
        scored = [int((ids[:, image_end + 1:] != 0).sum()) for ids in batches]  # the right-text tokens scored
        global_scored = sum(scored)
        if acc.num_processes > 1:
            global_scored = int(acc.reduce(torch.tensor([global_scored], device=acc.device), reduction="sum").item())
        share = acc.num_processes * len(group)  # gradients are averaged over processes and micro-batches
        for i, input_ids in enumerate(batches):
            last = i == len(group) - 1
            input_ids = input_ids.to(acc.device)
            if self.fsdp:  # mixed precision is FSDP's policy; reduce-scatter the gradients once, after the last batch
                model.set_requires_gradient_sync(last)
                context = nullcontext()
            else:
                context = ExitStack()
                if not last and acc.num_processes > 1:
                    context.enter_context(acc.no_sync(model))
                context.enter_context(acc.autocast())
            with context:
                out = model(input_ids, loss_weights=tuple(cfg.train.loss_weights))
                loss = self._objective(out, scored[i] * share / max(global_scored, 1)) / len(group)
                if self.fsdp:
                    loss.backward()
                else:
                    acc.backward(loss)  # (fp16: through the loss scaler)
            totals["loss"] += loss.item()
            totals["l_text_loss"] += _value(out.l_text_loss) / len(group)
            totals["image_loss"] += _value(out.image_loss) / len(group)
            totals["r_text_loss"] += _value(out.r_text_loss) * scored[i] * acc.num_processes / max(global_scored, 1)
        return self._apply_step(totals, samples, start)

    def _apply_step(self, totals: dict, samples: int, start: float) -> dict:
        """After the backward passes of a step: clip, step the optimizer and scheduler, and the step's metrics."""
        acc = self.accelerator
        if acc.num_processes > 1:  # the global batch's values: the mean over processes of each one's share
            values = torch.tensor(list(totals.values()), device=acc.device)
            totals = dict(zip(totals, acc.reduce(values, reduction="mean").tolist(), strict=True))
        self.progress.step += 1
        self.progress.samples_seen += samples * acc.num_processes
        grad_norm = self._clip_gradients()
        lr = self.optimizer.param_groups[0]["lr"]
        finite = math.isfinite(totals["loss"])
        if finite:  # a non-finite step leaves the weights as they were
            self.optimizer.step()
            if not getattr(self.optimizer, "step_was_skipped", False):  # an fp16 overflow the loss scaler skipped
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._agree_on_stop()
        elapsed = time.perf_counter() - start
        metrics = {"step": self.progress.step, "epoch": self.progress.epoch, **totals, "lr": lr,
                   "grad_norm": grad_norm, "samples_per_s": samples * acc.num_processes / elapsed}
        if not finite:  # which of the loss and its segment losses were NaN/inf
            metrics["non_finite"] = [name for name, value in totals.items() if not math.isfinite(value)]
        return metrics

    # ---- multitask (tasks.path) ----------------------------------------------------------------------------
    def _read_task_tables(self):
        """(tasks.path's checked table, tasks.val_path's or None), or None for a single-task run."""
        tasks = self.config.tasks
        if tasks.path is None:
            return None
        if self.accelerator.num_processes > 1:
            raise ValueError("tasks.path (multitask training) runs in one process for now; launch without torchrun")
        from ..data.tables import DataError
        from ..data.tasks_data import read_task_table

        outside = self.config.data.allow_outside_root
        table = read_task_table(tasks.path, tasks.images_root, allow_outside_root=outside)
        if tasks.val_path is None:
            return table, None
        try:
            val = read_task_table(tasks.val_path, tasks.images_root, allow_outside_root=outside)
        except (DataError, OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"tasks.val_path: cannot use {tasks.val_path} as the multitask validation table: "
                              f"{error}") from None
        return table, val

    def _prepare_tasks(self, tables):
        """(the encoded rows of tasks.path, of tasks.val_path or None), or (None, None) for a single-task run; the
        images of both encoded once, here."""
        if tables is None:
            return None, None
        from ..tasks import TaskLayout
        from .data import task_examples

        table, val = tables
        components = self.prepared.components
        config = components.model.config
        from .prepare import view_encoder

        augment = set(self.config.tasks.augment)
        # the training rows get the run's image views where their task is in tasks.augment; validation: view 0 only
        encode = view_encoder(components.vqgan, self.config, config.image_size, config.image_seq_length,
                              len(table.images()), shift_seed=self.config.train.seed + 1) \
            if self.config.vqgan.views > 1 and augment else None
        examples = task_examples(table, components.vqgan, config.image_size, config.image_seq_length,
                                 encode_views=encode, augment=augment)
        val_examples = task_examples(val, components.vqgan, config.image_size, config.image_seq_length) \
            if val is not None else None
        self.task_layout = TaskLayout(config, components.tokenizer)
        self._note_cut_texts(table)
        counts = ", ".join(f"{name} {count}" for name, count in table.counts().items())
        self.echo(f"tasks: {len(examples)} rows of {self.config.tasks.path} ({counts}) beside "
                  f"{len(self.prepared.train)} captioning rows of data.path")
        if val is not None:
            counts = ", ".join(f"{name} {count}" for name, count in val.counts().items())
            self.echo(f"tasks: {len(val_examples)} validation rows of {self.config.tasks.val_path} ({counts}): "
                      "val_task_loss/<task> at every validation")
        return examples, val_examples

    def _note_cut_texts(self, table) -> None:
        """Say how many rows' texts the model's segments cut (as the baseline cuts them: the eos is lost first), and
        the longest, so that a too short `l_text_seq_length` / `r_text_seq_length` is seen before training."""
        from ..tasks import get_task

        layout, config = self.task_layout, self.task_layout.config
        for side, length, key in (("left", config.l_text_seq_length, "l_text_seq_length"),
                                  ("right", config.r_text_seq_length, "r_text_seq_length")):
            lengths = []
            for row in table.rows:
                task = get_task(row.task)
                token, text = (task.left_token, row.left_text) if side == "left" else (task.right_token, row.right_text)
                if text:
                    lengths.append(layout.length(text, token))
            cut = sum(n > length for n in lengths)
            if cut:
                self.echo(f"note: {cut} of {len(table.rows)} rows of {self.config.tasks.path} have a {side} text "
                          f"longer than {key} ({length} tokens, the longest {max(lengths)}): cut to it; raise "
                          f"model.overrides.{key} to keep them whole")

    def _num_examples(self) -> int:
        """Training examples: data.path's (indices first), then the multitask table's."""
        return len(self.prepared.train) + (len(self.task_data) if self.task_data is not None else 0)

    def _task_names(self) -> list[str]:
        """The task of every training example (data.path's rows are captioning)."""
        return ["captioning"] * len(self.prepared.train) + list(self.task_data.tasks)

    def _task_weights(self, name: str) -> tuple[float, float, float]:
        """A multitask-table task's (left, image, right) loss weights: tasks.loss_weights, else the Task's."""
        from ..tasks import get_task

        if name in self.config.tasks.loss_weights:
            return tuple(self.config.tasks.loss_weights[name])
        weights = get_task(name).loss_weights
        return (weights.left, weights.image, weights.right)

    def _task_groups(self, indices: list[int]) -> list[tuple[str, tuple[float, float, float], torch.Tensor]]:
        """(task, loss weights, (b, S) or (b, l + image) ids) per task of a batch; data.path's rows first, as one
        captioning group with train.loss_weights and the single-task layout. A group without any right text
        (generation) stops after the image, as the baseline feeds it."""
        from .data import assemble_task_batch, without_empty_right_text

        first = len(self.prepared.train)
        groups = []
        food = [i for i in indices if i < first]
        if food:
            groups.append(("captioning", tuple(self.config.train.loss_weights), self._batch(food)))
        by_task: dict[str, list[int]] = {}
        for i in indices:
            if i >= first:
                by_task.setdefault(self.task_data.tasks[i - first], []).append(i - first)
        image_end = self.prepared.l_text_seq_length + self.prepared.components.model.config.image_seq_length
        for name, rows in by_task.items():
            ids = assemble_task_batch(self.task_data, rows, self.task_layout, rng=self.text_rng,
                                      token_dropout=self.config.tasks.token_dropout, seed=self.config.train.seed,
                                      step=self.progress.step)
            groups.append((name, self._task_weights(name), without_empty_right_text(ids, image_end)))
        return groups

    def _multitask_step(self, group: list[list[int]]) -> dict:
        """One optimizer step of a multitask run: one forward per task of each batch with that task's loss weights
        (as the FBC2 baseline's `get_loss`), each task's weighted loss counted by its share of the step's examples
        (the baseline sums one loss per task present: its scale then grows with the number of tasks in a batch)."""
        acc = self.accelerator
        start = time.perf_counter()
        totals = {"loss": 0.0, "l_text_loss": 0.0, "image_loss": 0.0, "r_text_loss": 0.0}
        per_task: dict[str, float] = {}
        samples = sum(len(b) for b in group)
        for indices in group:
            for name, weights, input_ids in self._task_groups(indices):
                share = len(input_ids) / samples
                with acc.autocast():
                    out = self.model(input_ids.to(acc.device), loss_weights=weights)
                    loss = out.loss * share
                acc.backward(loss)
                totals["loss"] += loss.item()
                totals["l_text_loss"] += _value(out.l_text_loss) * share
                totals["image_loss"] += _value(out.image_loss) * share
                totals["r_text_loss"] += (_value(out.r_text_loss) if out.r_text_loss is not None else 0.0) * share
                per_task[name] = per_task.get(name, 0.0) + out.loss.item() * len(input_ids)
                per_task[f"n_{name}"] = per_task.get(f"n_{name}", 0.0) + len(input_ids)
        metrics = self._apply_step(totals, samples, start)
        for name in [key for key in per_task if not key.startswith("n_")]:
            metrics[f"{TASK_LOSS_PREFIX}{name}"] = per_task[name] / per_task[f"n_{name}"]
        return metrics

    def _objective(self, out, r_text_share: float) -> torch.Tensor:
        """The weighted loss (as the model's `out.loss`) with the right-text loss scaled to its share of the global
        batch's scored tokens; fp32 whatever the autocast precision (the model computes the losses in fp32)."""
        r_text = out.r_text_loss
        if r_text is not None:  # (no scored token in this batch: no term, rather than its 0/0)
            r_text = r_text * r_text_share if r_text_share else torch.zeros((), device=r_text.device)
        return weighted_loss(self.config.train.loss_weights, (out.l_text_loss, out.image_loss, r_text))

    def _clip_gradients(self) -> float:
        """Clip the gradients' global norm to train.max_grad_norm (fp16: after unscaling); the norm before."""
        max_norm = self.config.train.max_grad_norm
        if self.fsdp:  # DTensor gradients: the norm is reduced over the shards
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], max_norm)
            return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        return float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))

    def _batch(self, indices: list[int]) -> torch.Tensor:
        cfg, prepared = self.config, self.prepared
        return assemble_batch(prepared.train, indices, l_text_seq_length=prepared.l_text_seq_length,
                              seed=cfg.train.seed, step=self.progress.step, tokenizer=prepared.components.tokenizer,
                              bpe_dropout=cfg.tokenizer.bpe_dropout, text_rng=self.text_rng)

    def _non_finite(self, metrics: dict) -> None:
        """A NaN/inf loss: log the step, then skip it (train.nan_policy=skip) or stop saying what to do."""
        self.metrics.log(metrics)  # whatever logging.every says
        segments = [name for name in metrics["non_finite"] if name != "loss"]
        what = f"step {metrics['step']}: loss is {metrics['loss']}" + (
            f" (non-finite: {', '.join(segments)})" if segments else "")
        if self.config.train.nan_policy == "skip":
            self.echo(f"{what}; step skipped (train.nan_policy=skip)")
            return
        self.metrics.plot()
        warning = self.watch.explain()
        raise TrainingStopped(
            f"{what}. {warning + ' ' if warning else ''}Lower optim.lr (now {self.config.optim.lr:g}), check the data "
            f"(`rudolph-ft data check`), use train.precision=no or bf16, or set train.nan_policy=skip to skip such "
            f"steps. {self._checkpoint_note()}")

    def _checkpoint_note(self) -> str:
        """Which checkpoint the stopped run has, and whether it was saved after the blow-up began."""
        found = latest_checkpoint(self.run_dir)
        if found is None:
            return f"No checkpoint was saved (checkpoint.every={self.config.checkpoint.every})."
        step = int(found.name.removeprefix("step-"))
        weight = self.watch.checkpoint_weights.get(step)
        note = f"The last checkpoint is {found} (step {step}" + (
            f", largest |w| {weight:.3g})." if weight is not None else ").")
        began = self.watch.began()
        if began is not None and step >= began:
            note += (f" It was saved after the blow-up began at step {began}: do not resume it; start again with a "
                     "lower optim.lr, or resume an earlier checkpoint if one is kept (delete the later ones first).")
        return note

    def _after_step(self, metrics: dict) -> None:
        cfg, step = self.config, self.progress.step
        if "non_finite" not in metrics and (step % cfg.logging.every == 0 or step == self.total_steps):
            self.metrics.log(metrics)  # (a non-finite step is logged already)
        if cfg.eval.every and step % cfg.eval.every == 0 and step < self.total_steps:
            self._evaluate(final=False)
        if self.on_step is not None:
            self.on_step(self, metrics)
        if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or self._stop_reason is not None:
            self.watch.remember_checkpoint(step)
            self._save_checkpoint()

    # ---- evaluation, checkpoints, the end -----------------------------------------------------------------
    @property
    def task(self):
        """The run's task (`rudolph_ft.tasks.run_task`: the food task), which evaluates the run."""
        from ..tasks import run_task

        return run_task(self.config)

    def _evaluate(self, final: bool) -> dict:
        result = self.task.evaluate_run(self, final=final)
        self.model.train()
        return result

    def _components(self, device: torch.device | None = None) -> Components | None:
        """The trained model with its tokenizer and VQGAN, on the main process (None on the others).

        Under FSDP the weights are gathered into a plain model first (on the CPU, or `device`): every process must
        call this then.
        """
        prepared, acc = self.prepared, self.accelerator
        if not self.fsdp:
            model = acc.unwrap_model(self.model)
        else:
            state = full_state_dict(self.model)  # a collective
            if not acc.is_main_process:
                return None
            from ..model import RuDolph

            with torch.device("meta"):
                model = RuDolph(prepared.components.model.config)
            model.load_state_dict(state, assign=True)
            model.reset_buffers("cpu")
            if device is not None:
                model.to(device)
        return Components(model, prepared.components.tokenizer, prepared.components.vqgan) if acc.is_main_process \
            else None

    def _write_model(self, directory: Path, components: Components) -> None:
        save_components(components, directory, **self.prepared.component_names, adapter_base=self.adapter_base)
        self.config.save(directory / RUN_CONFIG)

    def _write_run_config(self) -> None:
        """RUN/run_config.yaml, what `rudolph-ft train --resume RUN` reads; atomic, so a kill leaves the old one."""
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / RUN_CONFIG, self.config.save)

    def _save_checkpoint(self) -> None:
        """Every process writes its part into one `step-N.tmp-*` folder, then the main process commits it.

        Main: the model folder (consolidated), training_state.pt (optimizer unless sharded, scheduler, loss scaler,
        progress). Each process: its random streams (rng-R.pt) and, under FSDP, its optimizer shard.
        """
        from accelerate.utils import broadcast_object_list

        acc = self.accelerator
        acc.wait_for_everyone()
        if self._saved_step == self.progress.step:
            return
        self._saved_step = self.progress.step
        components = self._components()  # (a collective under FSDP)
        folder = [str(new_checkpoint_folder(self.run_dir, self.progress.step)) if acc.is_main_process else None]
        if acc.num_processes > 1:
            broadcast_object_list(folder)
        tmp = Path(folder[0])
        save_rng(tmp, acc.process_index, self.text_rng)
        if self.fsdp:
            save_sharded_optimizer(self.model, self.optimizer, tmp)
        if acc.is_main_process:
            self._write_model(tmp, components)
            scaler = acc.scaler
            state = {"optimizer": None if self.fsdp else self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "progress": progress_dict(self.progress), "num_processes": acc.num_processes}
            torch.save(state, tmp / STATE_NAME)
        acc.wait_for_everyone()  # every process's part is written
        if acc.is_main_process:
            path = commit_checkpoint(tmp, self.progress.step, self.config.checkpoint.keep)
            self._write_plots()
            self.echo(f"checkpoint: {path}")

    def _write_plots(self) -> None:
        """loss_curve.png and (a multitask run) task_losses.png from the metrics logged so far (main process)."""
        self.metrics.plot()
        if self.task_data is not None:
            from .plots import plot_task_losses

            plot_task_losses(self.metrics.rows, self.run_dir / "task_losses.png")

    def _checkpoint_to_resume(self) -> Path | None:
        found = latest_checkpoint(self.run_dir)
        if self.resume:
            if found is None:
                raise FileNotFoundError(f"{self.run_dir}: no checkpoint to resume (checkpoints/step-N with "
                                        "training_state.pt); start a new run instead")
            self.echo(f"resuming from {found}")
            return found
        if found is not None or (self.run_dir / "final").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run; resume it with "
                                  f"`{resume_command(self.run_dir)}` or choose another output_dir")
        return None

    def _restore(self, checkpoint: Path) -> None:
        """Optimizer, scheduler, loss scaler, progress and this process's random streams, as the checkpoint has them."""
        acc = self.accelerator
        state = load_training_state(checkpoint)
        if self.fsdp:
            load_sharded_optimizer(self.model, self.optimizer, checkpoint)
        elif state["optimizer"] is None:
            raise ValueError(f"{checkpoint} was saved by an FSDP run (its optimizer state is sharded in "
                             f"{checkpoint / 'optimizer'}): resume it with train.strategy=fsdp and several processes")
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        self.progress = state["progress"]
        rng = load_rng(checkpoint, acc.process_index, state)
        if rng is not None:
            restore_rng(rng, self.text_rng)
        saved = state.get("num_processes", 1)
        if saved != acc.num_processes:
            self.echo(f"note: {checkpoint} was saved by {saved} process(es), this run has {acc.num_processes}: the "
                      "data order continues, the random streams of processes without a saved one start afresh")

    def _finish(self) -> dict:
        summary = {"run_dir": str(self.run_dir), "steps": self.progress.step, "epochs_done": self.progress.epoch,
                   "stopped": self._stop_reason}
        if self._stop_reason is not None:
            self.echo(f"{self._stop_reason}: stopped after step {self.progress.step}, checkpoint saved. Resume with:\n"
                      f"  {resume_command(self.run_dir, self.accelerator.num_processes)}")
            return summary
        self._save_checkpoint()  # every process enters its barrier
        components = self._components()  # (a collective under FSDP)
        if self.accelerator.is_main_process:
            self._write_model(self.run_dir / "final", components)
            self.echo(f"trained model: {self.run_dir / 'final'}")
        self.accelerator.wait_for_everyone()
        if self.config.eval.final:
            summary["eval"] = self._evaluate(final=True)
            if self.accelerator.is_main_process and summary["eval"]:
                self._write_plots()  # with the final validation point
                text = json.dumps(summary["eval"], indent=2, ensure_ascii=False) + "\n"
                atomic_write(self.run_dir / "eval.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
                from .plots import write_eval_plots

                for picture in write_eval_plots(summary["eval"], self.run_dir):  # confusion.png, kcal_scatter.png
                    self.echo(f"picture: {picture}")
        return summary


def _value(loss: torch.Tensor | None) -> float:
    return loss.item() if loss is not None else float("nan")


class _stop_on_signals:
    """Ctrl-C / SIGTERM ask the trainer to stop after the current step (a second Ctrl-C interrupts at once)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.trainer._stop_reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.trainer.request_stop(f"received {signal.Signals(signum).name}")

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False


def train(config_path: str | Path | None = None, overrides: list[str] | None = None, *, resume: str | None = None,
          echo: Callable[[str], None] = print) -> dict:
    """Run training from a YAML config (+ overrides), or resume the run in directory `resume`.

    A run that saved no checkpoint yet (killed or failed early) is not continued by a fresh run into its folder,
    which would reuse its state (bpe.model) unasked: `resume` starts it again from step 0 with its saved config.
    """
    if resume is not None:
        run_dir = Path(resume)
        config = load_train_config(_config_to_resume(run_dir, echo), overrides)
        # set, not an override: a YAML override would turn a directory named e.g. `007` into the number 7
        config = config.replace(output_dir=str(resume))
        from .prepare import check_learned_tokenizer

        check_learned_tokenizer(config, run_dir)  # before the resume rewrites run_config.yaml with these overrides
        restart = _unfinished_without_checkpoint(run_dir)
        if restart and os.environ.get("RANK", "0") == "0":
            echo(f"{run_dir}: no checkpoint yet; starting the run again from step 0 with its saved config")
        return Trainer(config, resume=not restart, echo=echo).run()
    config = load_train_config(config_path, overrides)
    run_dir = Path(config.output_dir)
    left = _unfinished_without_checkpoint(run_dir)
    if left:
        with FolderLock(run_dir, hint="choose another output_dir", echo=lambda message: None):
            pass  # a live run that has no checkpoint yet is named as the holder (FolderLockedError), not as unfinished
        raise FileExistsError(f"{run_dir} holds an unfinished run that saved no checkpoint ({', '.join(left)}); "
                              f"start it again with `{resume_command(run_dir)}` (its saved config, from step 0) or "
                              "choose another output_dir")
    return Trainer(config, echo=echo).run()


def _unfinished_without_checkpoint(run_dir: Path) -> list[str]:
    """The state files (run_config.yaml, bpe.model) in `run_dir` when it holds neither a complete checkpoint nor
    final/ (an attempt that stopped early), else []."""
    from ..components import TOKENIZER_NAME

    if latest_checkpoint(run_dir) is not None or (run_dir / "final").exists():
        return []
    return [name for name in (RUN_CONFIG, TOKENIZER_NAME) if (run_dir / name).is_file()]


def _config_to_resume(run_dir: Path, echo: Callable[[str], None]) -> Path:
    """RUN/run_config.yaml, else the copy in the newest checkpoint (a run whose root copy is missing)."""
    root = run_dir / RUN_CONFIG
    if root.is_file():
        return root
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and (checkpoint / RUN_CONFIG).is_file():
        if os.environ.get("RANK", "0") == "0":  # once, not per process of a multi-process launch
            echo(f"{root} is missing; using the config saved with {checkpoint}")
        return checkpoint / RUN_CONFIG
    raise FileNotFoundError(f"{run_dir}: no {RUN_CONFIG}, nor a checkpoint holding one (checkpoints/step-N); is "
                            "this a rudolph-ft run directory?")
