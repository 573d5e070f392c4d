"""Command-line flags generated from dataclasses (STYLE.md principle 12, after litgpt's args.py).

A settings dataclass declares each field with `tl.train.arg(default, "one-line help")`; `add_arguments`
turns the fields into argparse flags (`micro_batch` -> `--micro-batch`), and `from_namespace`
builds the dataclass back from the parsed flags, so the dataclass's `__post_init__` validates them
and the resolved settings can be written into every run directory. Tuples become comma lists
(`--seeds 42,544460`), booleans `--flag/--no-flag`. Imports no tl file; used by the tools only.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (`error: argument --mode: invalid choice ...`), not
    after a screen of usage text: what the tools promise for every bad flag."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parse_tuple(kind):
    def parse(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        try:
            return tuple(kind(x) for x in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")

    return parse


def add_arguments(parser: argparse.ArgumentParser, cls, group: str | None = None) -> None:
    """Add one flag per field of dataclass `cls` (fields without help metadata are skipped)."""
    target = parser.add_argument_group(group) if group else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind, name = hints[f.name], "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata["help"] + (f" (default: {_show(default)})" if default not in ("", None, ()) else "")
        if kind is bool:
            target.add_argument(name, default=default, action=argparse.BooleanOptionalAction, help=f.metadata["help"])
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            target.add_argument(name, type=_parse_tuple(item), default=default, help=help_text, metavar="A,B,...")
        else:
            target.add_argument(name, type=kind, default=default, help=help_text,
                                choices=f.metadata.get("choices"), metavar=f.metadata.get("metavar"))


def from_namespace(cls, namespace: argparse.Namespace, **overrides):
    """Build `cls` from the parsed flags that are its fields."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
    values.update(overrides)
    return cls(**values)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
