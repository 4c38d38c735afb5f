"""The `rudolph-ft` command line: thin wrappers over the library, one sub-command per job."""

from __future__ import annotations

import typer

app = typer.Typer(help="Fine-tune and use the RuDOLPH hyper-modal transformer.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Check, describe and generate captioned-image datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ---- data commands (rudolph_ft/data) -------------------------------------------------------------------------


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


def main() -> None:
    app()
