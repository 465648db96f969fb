"""Typed job configs: each engine job declares ONE frozen dataclass that owns every setting's default,
choices, range, unit and one-line help. The CLI's options and the window's Advanced form are generated from
it (``field_specs``), so no default is written twice and a new hyper-parameter is one line::

    @dataclass(frozen=True, kw_only=True)
    class FinetuneConfig(JobConfig):
        epochs: int = param(10, "at most this many passes over the training cells", min=1, unit="epochs")
        label_smoothing: float = param(0.0, "cross-entropy label smoothing", min=0, max=1, advanced=True)

Why stdlib dataclasses with field metadata rather than pydantic: no new dependency, frozen instances the
jobs layer can pickle and compare, ``dataclasses.fields`` gives the introspection both faces need, and the
validation we need (types, ranges, choices, unknown keys) is small and must speak the project's
``DataError`` style (what, where, what to do), which pydantic's messages do not. (scvi-tools'
``TrainingPlanConfig`` made the same choice.)

Rules every config follows:
- ``from_dict(d)`` is the one way in from untyped data (CLI namespace, window form, run.json on resume):
  unknown keys are refused, strings from a form are parsed, every range is checked.
- ``None`` is a value only where the field says so (``nullable``: "by preset", "all", "model default"); 0 is
  always 0 (patience 0 stops after the first epoch without improvement; test fraction 0 keeps no test cells).
- ``to_dict()`` is what travels to the job process and is written to run.json; ``from_dict(to_dict())`` is
  the identity.

The window engineer's form uses ``field_specs(Config)``::

    for spec in field_specs(FinetuneConfig):
        if spec.advanced: make_editor(spec.name, spec.kind, spec.default, spec.choices, spec.min, spec.max,
                                      spec.help, spec.none_label)
    config = FinetuneConfig.from_dict({**fixed_values, **form_values})
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from app.data.errors import DataError

C = TypeVar("C", bound="JobConfig")

_MISSING = dataclasses.MISSING


def param(default: Any = _MISSING, help: str = "", *, choices: tuple[Any, ...] | None = None,
          suggestions: tuple[Any, ...] | None = None, min: float | None = None,
          max: float | None = None, min_exclusive: bool = False, unit: str = "",
          advanced: bool = False, group: str = "", none_label: str = "", kind: str = "",
          cli: bool = True, flag: str = "", metavar: str = "", required: bool = False,
          check: Callable[[Any], str | None] | None = None) -> Any:
    """One setting of a job config (a ``dataclasses.field`` carrying its metadata).

    ``choices``: the only values allowed (a ``Literal`` annotation gives them too); ``suggestions``: values a
    form offers while others stay valid (``freeze``: ``last:3``); ``min``/``max``: inclusive bounds
    (``min_exclusive``: ``> min``); ``advanced``: shown in the window's Advanced form; ``none_label``: what
    ``None`` means for a nullable field; ``kind``: ``path``/``paths``/``device``/``json`` when the Python type
    says too little; ``cli``: exposed as a command-line option (``flag`` overrides ``--name-with-dashes``);
    ``required``: no default (the job cannot run without it); ``check``: extra validation returning an
    error text or None.
    """
    meta = {"help": help, "choices": choices, "suggestions": suggestions, "min": min, "max": max,
            "min_exclusive": min_exclusive, "unit": unit, "advanced": advanced, "group": group,
            "none_label": none_label, "kind": kind, "cli": cli, "flag": flag, "metavar": metavar,
            "required": required or default is _MISSING, "check": check}
    if default is _MISSING:
        return dataclasses.field(default=None, metadata=meta)  # required: from_dict refuses None
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a face needs to offer one setting: built by ``field_specs`` from a config's fields (no Qt).

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``choice``, ``path``, ``paths`` (several
    paths), ``list`` (several strings), ``device``, ``json`` (an object, e.g. per-model parameters).
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    suggestions: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    unit: str = ""
    advanced: bool = False
    group: str = ""
    required: bool = False
    nullable: bool = False
    none_label: str = ""
    cli: bool = True
    flag: str = ""
    metavar: str = ""

    @property
    def label(self) -> str:
        """A form label: ``batch_size`` -> ``batch size``."""
        return self.name.replace("_", " ")

    def default_text(self) -> str:
        """The default as a user reads it (``None`` shown through ``none_label``)."""
        if self.default is None:
            return self.none_label or "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, nullable) of ``X | None``."""
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


def _kind(tp: Any, meta: dict[str, Any]) -> tuple[str, tuple[Any, ...] | None]:
    if meta.get("kind"):
        return str(meta["kind"]), meta.get("choices")
    if typing.get_origin(tp) is Literal:
        return "choice", tuple(typing.get_args(tp))
    if meta.get("choices"):
        return "choice", tuple(meta["choices"])
    if tp is bool:
        return "bool", None
    if tp is int:
        return "int", None
    if tp is float:
        return "float", None
    if typing.get_origin(tp) is tuple:
        return "list", None
    if typing.get_origin(tp) is dict or tp is dict:
        return "json", None
    return "str", None


def field_specs(cls: type[JobConfig]) -> list[FieldSpec]:
    """The settings of a job config, in declaration order, for generating a CLI or a form."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        tp, nullable = _unwrap(hints[f.name])
        kind, choices = _kind(tp, meta)
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)
        out.append(FieldSpec(
            name=f.name, kind=kind, default=None if meta.get("required") else default, help=meta.get("help", ""),
            choices=choices, suggestions=meta.get("suggestions"), min=meta.get("min"), max=meta.get("max"),
            min_exclusive=bool(meta.get("min_exclusive")), unit=meta.get("unit", ""),
            advanced=bool(meta.get("advanced")), group=meta.get("group", ""), required=bool(meta.get("required")),
            nullable=nullable, none_label=meta.get("none_label", ""), cli=bool(meta.get("cli", True)),
            flag=meta.get("flag") or "--" + f.name.replace("_", "-"), metavar=meta.get("metavar", "")))
    return out


def spec_of(cls: type[JobConfig], name: str) -> FieldSpec:
    """One field's spec."""
    for s in field_specs(cls):
        if s.name == name:
            return s
    raise KeyError(name)


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _coerce(spec: FieldSpec, value: Any, job: str, where: str | None) -> Any:
    """``value`` as the field's type, or a DataError saying what is wrong and what to give."""
    what = f"setting {spec.name!r}" + (f" ({spec.flag})" if spec.cli else "") + f" of the {job} job"

    def bad(expected: str) -> DataError:
        return DataError(f"{what} must be {expected}, got {value!r}", where, spec.help or None)

    blank = isinstance(value, str) and value.strip() == ""
    if value is None or (blank and (spec.nullable or spec.required or spec.kind != "str")):
        if spec.nullable and not spec.required:
            return None
        how = f"Pass {spec.flag} {spec.metavar or 'VALUE'}" if spec.cli else f"Set {spec.name}"
        hint = f"{how} ({spec.help})." if spec.help else f"{how}."
        raise DataError(f"{what} needs a value", where, hint)
    kind = spec.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("yes or no")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("a whole number")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad("a whole number") from None
        if not isinstance(value, int):
            raise bad("a whole number")
    elif kind == "float":
        if isinstance(value, bool):
            raise bad("a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
    elif kind == "choice":
        assert spec.choices is not None
        match = [c for c in spec.choices if str(c).lower() == str(value).strip().lower()]
        if not match:
            raise DataError(f"{what} must be one of {', '.join(map(str, spec.choices))}, got {value!r}", where,
                            spec.help or None)
        value = match[0]
    elif kind in ("list", "paths"):
        items = [value] if isinstance(value, str | Path) else value
        if not isinstance(items, list | tuple):
            raise bad("a list of names or paths")
        value = tuple(str(v) for v in items)
    elif kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise DataError(f"{what} is not valid JSON ({exc})", where, spec.help or None) from None
        if not isinstance(value, dict):
            raise bad("a JSON object")
    else:  # str, path, device
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise bad("text")
    if kind in ("int", "float"):
        lo, hi = spec.min, spec.max
        if lo is not None and (value <= lo if spec.min_exclusive else value < lo):
            cmp = "greater than" if spec.min_exclusive else "at least"
            raise DataError(f"{what} must be {cmp} {lo:g}, got {value!r}", where,
                            f"Give {spec.name} {cmp} {lo:g} ({spec.help}).")
        if hi is not None and value > hi:
            raise DataError(f"{what} must be at most {hi:g}, got {value!r}", where,
                            f"Give {spec.name} at most {hi:g} ({spec.help}).")
    return value


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Base of every job config: the settings the jobs layer itself fills (run folder, resume) and the compute
    settings every job has. Subclasses redeclare a field to change its default, help or CLI flag."""

    JOB: ClassVar[str] = "job"
    """The registry name (``celllm.finetune``), used in messages."""

    run_dir: str | None = param(None, "run folder (written by the jobs layer)", kind="path", cli=False)
    resume: bool = param(False, "continue the run folder from its last checkpoint", cli=False)
    device: str = param("auto", "auto, cpu, cuda, cuda:N or mps (auto: a CUDA GPU when one is visible)",
                        kind="device", group="compute")
    threads: int | None = param(None, "CPU threads for torch", min=1, group="compute",
                                none_label="1 (small models: more threads cost more than they give)")

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any] | None, where: str | Path | None = None) -> C:
        """A validated config from untyped values (CLI, form, run.json); missing keys take the defaults.

        Raises:
            DataError: an unknown key (with the closest known names), a value of the wrong type, out of
                range or not among the choices, a missing required value, or a cross-field rule broken.
        """
        values = dict(values or {})
        where_s = str(where) if where is not None else None
        specs = {s.name: s for s in field_specs(cls)}
        unknown = [k for k in values if k not in specs]
        if unknown:
            near = sorted({m for k in unknown for m in difflib.get_close_matches(k, list(specs), n=2)})
            raise DataError(f"unknown setting(s) for the {cls.JOB} job: {', '.join(map(repr, unknown))}", where_s,
                            (f"Did you mean {', '.join(near)}? " if near else "")
                            + f"Known settings: {', '.join(specs)}.")
        kwargs: dict[str, Any] = {}
        for name, spec in specs.items():
            if name in values:
                kwargs[name] = _coerce(spec, values[name], cls.JOB, where_s)
            elif spec.required:
                _coerce(spec, None, cls.JOB, where_s)  # raises "needs a value"
        for f in dataclasses.fields(cls):
            chk = f.metadata.get("check")
            if chk is not None and f.name in kwargs and kwargs[f.name] is not None:
                err = chk(kwargs[f.name])
                if err:
                    raise DataError(f"setting {f.name!r} of the {cls.JOB} job: {err}", where_s,
                                    specs[f.name].help or None)
        cfg = cls(**kwargs)
        err = cfg.problem()
        if err:
            raise DataError(f"the {cls.JOB} job settings do not fit together: {err}", where_s, None)
        return cfg

    @classmethod
    def coerce(cls: type[C], config: C | dict[str, Any]) -> C:
        """A job function's way in: a config as given, or one built from a dict (the job process, run.json)."""
        if isinstance(config, cls):
            return config
        if isinstance(config, JobConfig):
            raise DataError(f"the {cls.JOB} job was given a {type(config).__name__}", None,
                            f"Pass a {cls.__name__} or a dict of its settings.")
        return cls.from_dict(dict(config))

    def problem(self) -> str | None:
        """A cross-field rule this config breaks (subclasses override), else None."""
        return None

    # -- use -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-ready Python (tuples as lists): what the job process and run.json get.
        ``resume`` appears only when True: it is an instruction to this run, not a setting to repeat."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "resume" and not v:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else copy.deepcopy(v)
        return out

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some settings changed."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each setting's default (None for required ones)."""
        return {s.name: s.default for s in field_specs(cls)}


def example_values(cls: type[JobConfig]) -> dict[str, Any]:
    """A valid, NON-default value for every CLI-exposed setting (tests: the same choices set through the CLI
    and through the form must give equal configs). Required paths get placeholder names."""
    out: dict[str, Any] = {}
    for s in field_specs(cls):
        if not s.cli:
            continue
        out[s.name] = _other_value(s)
    return out


def _other_value(s: FieldSpec) -> Any:
    if s.kind == "bool":
        return not bool(s.default)
    if s.kind == "choice":
        assert s.choices
        others = [c for c in s.choices if c != s.default]
        return others[-1] if others else s.choices[0]
    if s.suggestions and s.kind not in ("paths", "list"):
        others = [c for c in s.suggestions if c != s.default]
        if others:
            return others[-1]
    if s.kind in ("int", "float"):
        lo = s.min if s.min is not None else 0
        base = s.default if isinstance(s.default, int | float) else (lo + (1 if s.kind == "int" else 0.5))
        cand = base + 1 if s.kind == "int" else round(base * 0.5 if base else 0.25, 6)
        if s.max is not None and cand > s.max:
            cand = (lo + s.max) / 2 if s.kind == "float" else int(lo)
        if s.kind == "float" and cand == s.default:
            cand = s.max if s.max is not None else cand + 1.0
        if s.kind == "int":
            cand = int(cand)
            if s.min_exclusive and cand <= lo:
                cand = int(lo) + 1
        return cand
    if s.kind == "device":
        return "cpu" if s.default != "cpu" else "auto"
    if s.kind in ("paths", "list"):
        return list(s.suggestions[-2:]) if s.suggestions else [f"{s.name}_a", f"{s.name}_b"]
    if s.kind == "json":
        return {"example": {"value": 1}}
    suffix = s.metavar.rsplit(".", 1)[1] if "." in s.metavar else ""
    return f"{s.name}_x" + (f".{suffix}" if suffix else "")


__all__ = ["FieldSpec", "JobConfig", "example_values", "field_specs", "param", "spec_of"]
