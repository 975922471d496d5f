"""The `promot-jax` command line: one subcommand per module in promot_jax.commands.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so `promot-jax params` does
not pay for TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
}


def _load(name: str):
    return importlib.import_module(f"promot_jax.commands.{COMMANDS[name]}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promot-jax",
        description="ProMoT / DMT format-preserving fine-tuning of mT5 (JAX/Flax).",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, gin_dot_bindings = _split_gin_dot_flags(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.gin_dot_bindings = gin_dot_bindings
    module = _load(args.command)
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"promot-jax {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
