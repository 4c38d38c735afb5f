"""Evaluation during and after training: validation loss now; caption metrics join once generation lands."""

from __future__ import annotations

import torch

__all__ = ["validation_loss", "evaluate_during_training"]


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


def evaluate_during_training(trainer, final: bool) -> dict:
    cfg, prepared = trainer.config, trainer.prepared
    if len(prepared.val) == 0:
        return {}
    model = trainer.accelerator.unwrap_model(trainer.model)
    row = {"step": trainer.progress.step, **validation_loss(
        model, prepared.val, l_text_seq_length=prepared.l_text_seq_length, loss_weights=cfg.train.loss_weights,
        batch_size=cfg.train.batch_size, device=trainer.accelerator.device)}
    trainer.metrics.log(row)
    trainer.echo(f"step {row['step']}: validation loss {row['val_loss']:.4f} (right text {row['val_r_text_loss']:.4f})")
    return row
