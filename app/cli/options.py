"""Command-line options generated from a job config's fields (``app.engine.jobconfig``): flag, help with
default/unit/choices, type. Every option defaults to "not given" (None), so the config's own default applies
and a ``--config`` file can be overridden option by option.

``to_argv(Config, values)`` is the reverse (tests: the same choices through the CLI and through the form give
equal configs)."""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeVar

from app.engine.jobconfig import FieldSpec, JobConfig, field_specs

C = TypeVar("C", bound=JobConfig)


def help_text(spec: FieldSpec) -> str:
    """The one-line help of an option: the config's help, unit, choices and default."""
    text = spec.help
    if spec.suggestions:
        text += f" (e.g. {', '.join(map(str, spec.suggestions))})"
    if spec.required:
        return text
    if spec.kind == "bool" and spec.default is False:
        return text
    default = spec.default_text()
    if spec.unit and spec.default is not None and not isinstance(spec.default, bool):
        default += f" {spec.unit}"
    return f"{text} (default: {default})".replace("%", "%%")


def add_config_options(parser: argparse.ArgumentParser, cls: type[JobConfig], *, skip: tuple[str, ...] = (),
                       optional: tuple[str, ...] = ()) -> None:
    """One option per CLI-exposed field of ``cls`` (``skip``: not offered; ``optional``: required fields that
    may come from elsewhere, e.g. a ``--config`` file, so argparse must not insist on them)."""
    for spec in field_specs(cls):
        if not spec.cli or spec.name in skip:
            continue
        kw: dict[str, Any] = {"dest": spec.name, "default": None, "help": help_text(spec)}
        if spec.metavar:
            kw["metavar"] = spec.metavar
        if spec.kind == "bool":
            kw["action"] = "store_true" if spec.default is False else argparse.BooleanOptionalAction
            kw.pop("metavar", None)
        elif spec.kind == "int":
            kw["type"] = int
        elif spec.kind == "float":
            kw["type"] = float
        elif spec.kind == "choice":
            kw["choices"] = list(spec.choices or ())
            kw.pop("metavar", None)
        elif spec.kind == "paths" or spec.kind == "list":
            kw.update(action="extend", nargs="+")
        if spec.required and spec.name not in optional:
            kw["required"] = True
        parser.add_argument(spec.flag, **kw)


def values_from_args(cls: type[JobConfig], args: argparse.Namespace) -> dict[str, Any]:
    """The options the user actually gave (None = not given)."""
    out: dict[str, Any] = {}
    for spec in field_specs(cls):
        if not spec.cli:
            continue
        v = getattr(args, spec.name, None)
        if v is None or (spec.kind == "bool" and v is False and spec.default is False):
            continue
        out[spec.name] = v
    return out


def config_from_args(cls: type[C], args: argparse.Namespace, base: dict[str, Any] | None = None,
                     **fixed: Any) -> C:
    """The validated config from parsed options, over ``base`` (e.g. a ``--config`` file), with ``fixed``
    values set by the subcommand itself."""
    return cls.from_dict({**(base or {}), **values_from_args(cls, args), **fixed}, where="command line")


def to_argv(cls: type[JobConfig], values: dict[str, Any]) -> list[str]:
    """Command-line arguments that set ``values`` (the reverse of ``config_from_args``)."""
    specs = {s.name: s for s in field_specs(cls)}
    argv: list[str] = []
    for name, v in values.items():
        s = specs[name]
        if not s.cli:
            raise ValueError(f"{name} is not a command-line option")
        if s.kind == "bool":
            if v and s.default is False:
                argv.append(s.flag)
            elif s.default is not False:
                argv.append(s.flag if v else "--no-" + s.flag[2:])
            continue
        if v is None:
            continue
        if s.kind in ("paths", "list"):
            argv += [s.flag, *map(str, v)]
        elif s.kind == "json":
            argv += [s.flag, json.dumps(v)]
        else:
            argv += [s.flag, str(v)]
    return argv


__all__ = ["add_config_options", "config_from_args", "help_text", "to_argv", "values_from_args"]
