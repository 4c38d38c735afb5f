"""The `rudolph-ft` command line: thin wrappers over the library, one sub-command per job."""

from __future__ import annotations

import typer

app = typer.Typer(help="Fine-tune and use the RuDOLPH hyper-modal transformer.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Check, describe and generate captioned-image datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ---- data commands (rudolph_ft/data) -------------------------------------------------------------------------


# ---- model commands ------------------------------------------------------------------------------------------


def main() -> None:
    app()
