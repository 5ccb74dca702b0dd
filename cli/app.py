"""The ``vopstore`` command: a thin typer app over the library.

Each command group lives in its own module and registers itself on ``app``.
No module in this package imports torch at import time: ``vopstore ls`` must
stay fast; heavy imports happen inside the commands that need them.
"""

from __future__ import annotations

import importlib
import sys

import typer

from vopstore.cli.output import fail
from vopstore.errors import VopstoreError

app = typer.Typer(
    name="vopstore",
    help="VoP prompt sets on a frozen CLIP: train, version, move and serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.command()
def version() -> None:
    """Print the vopstore version."""
    from vopstore import __version__

    typer.echo(__version__)


# Modules that add commands to `app` when imported; each owns its commands.
COMMAND_MODULES = (
    "vopstore.cli.store_cmds",
    "vopstore.cli.methods_cmd",
    "vopstore.cli.train_cmds",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the module
                raise


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors become one line on stderr and exit code 1."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except VopstoreError as exc:
        fail(str(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
