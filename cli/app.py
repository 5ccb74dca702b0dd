"""The ``vopstore`` command: a thin typer app over the library.

Each command group lives in its own module and registers itself on ``app``.
No module in this package imports torch at import time: ``vopstore ls`` must
stay fast; heavy imports happen inside the commands that need them.
"""

from __future__ import annotations

import importlib
import sys

import typer

from vopstore import __version__
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
    typer.echo(__version__)


# Modules that add commands to `app` when imported, with the top-level names each one adds: `vopstore ls`
# imports (and typer builds) only the module that owns `ls`. A test keeps the names equal to what they add.
COMMAND_MODULES = {
    "vopstore.cli.store_cmds": ("add", "ls", "show", "tag", "untag", "rm", "export", "verify", "gc", "fsck",
                                "push", "pull", "db", "remote"),
    "vopstore.cli.admin_cmds": ("log", "registry", "tenant", "token"),
    "vopstore.cli.serve_cmd": ("serve",),
    "vopstore.cli.methods_cmd": ("methods",),
    "vopstore.cli.train_cmds": ("train", "eval", "demo"),
    "vopstore.cli.gallery_cmds": ("search", "index"),
    "vopstore.cli.compare_cmd": ("compare",),
    "vopstore.cli.import_cmd": ("import-checkpoint",),
}


def _register(argv: list[str] | None = None) -> None:
    """Import the module that owns the command ``argv`` names; every module for help, a typo or no command."""
    command = (sys.argv[1:] if argv is None else argv)[:1]
    owners = [module for module, names in COMMAND_MODULES.items() if command and command[0] in names]
    for name in owners or COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the module
                raise


# typer >= 0.20 vendors click; BadParameter's bases give its ClickException either way.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors become one line on stderr and exit code 1.

    Returns the command's exit code (``typer.Exit(n)`` gives n), so tests can call it in-process.
    """
    _register(argv)
    try:
        code = app(args=argv, standalone_mode=False)
    except VopstoreError as exc:
        fail(str(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except OSError as exc:  # a path the user gave: missing folder, a file where a folder should be, ...
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}; check the path and its permissions")
    except typer.Exit as exc:
        return exc.exit_code
    except _ClickException as exc:  # usage errors: click's own message and exit code
        exc.show()
        return exc.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
