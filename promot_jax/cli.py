"""The `promot-jax` command line: one subcommand per module in promot_jax.commands.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so `promot-jax params` does
not pay for TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import traceback

from promot_jax import allocator, library_noise

# command name -> module under promot_jax.commands (underscored where the CLI uses a dash)
COMMANDS = {
    "params": "params",
    "convert": "convert",
    "tasks": "tasks",
    "export-prompt": "export_prompt",
    "train": "train",
    "run": "run",
    "eval": "eval",
    "lab": "lab",
    "plan": "plan",
}


def _load(name: str):
    return importlib.import_module(f"promot_jax.commands.{COMMANDS[name]}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promot-jax",
        description="ProMoT / DMT format-preserving fine-tuning of mT5 (JAX/Flax).",
        epilog=f"{VERBOSE_FLAG} (anywhere on the line, or {library_noise.VERBOSE_ENV}=1): keep the "
        "libraries' own logs (TensorFlow, SentencePiece, absl) and show tracebacks of errors",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    argv = sys.argv[1:] if argv is None else argv
    # Only the chosen command's module is imported; the others get a stub parser.
    # Without a command (`promot-jax --help`) every module is loaded for its help line.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name in COMMANDS:
        if name == chosen:
            module = _load(name)
            p = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(p)
        elif chosen is None:
            sub.add_parser(name, help=_load(name).HELP, add_help=False)
        else:
            sub.add_parser(name, add_help=False)
    return parser


def _split_gin_dot_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """t5x-style `--gin.NAME=VALUE` flags become gin bindings `NAME = VALUE`."""
    rest, bindings = [], []
    for arg in argv:
        if arg.startswith("--gin.") and "=" in arg:
            name, value = arg[len("--gin.") :].split("=", 1)
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
    return rest, bindings


VERBOSE_FLAG = "--verbose"
_GIN_CONTEXT = re.compile(r"^\s+In (call to configurable|file|bindings string)\b")


def main(argv: list[str] | None = None) -> int:
    """Runs a command; a user's mistake (a bad flag, binding, path or setting) exits 2 with
    one line naming it (`--verbose` adds the traceback and the libraries' own logs)."""
    console = argv is None  # the `promot-jax` program itself, not a call from Python
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = VERBOSE_FLAG in argv
    argv = [a for a in argv if a != VERBOSE_FLAG]
    try:
        verbose = verbose or library_noise.verbose_from_env()
        if console:  # before anything is imported or run: see promot_jax/allocator.py
            allocator.reexec_under_jemalloc()
    except ValueError as e:
        print(f"promot-jax: error: {e}", file=sys.stderr)
        return 2
    if not verbose:
        library_noise.quiet(filter_fd=console)  # before the command imports the libraries
    argv, gin_dot_bindings = _split_gin_dot_flags(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.gin_dot_bindings = gin_dot_bindings
    try:
        module = _load(args.command)
        return int(module.run(args) or 0)
    except (ValueError, KeyError, OSError) as e:
        if verbose:
            traceback.print_exc()
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError) and e.filename and not isinstance(msg, str):
            msg = f"{e.filename}: {e.strerror}"
        # gin appends "  In call to configurable ..." lines to errors raised under it.
        lines = [line for line in str(msg).splitlines() if not _GIN_CONTEXT.match(line)]
        print(f"promot-jax {args.command}: error: {' '.join(lines)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
