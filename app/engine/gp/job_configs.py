"""The settings of the genomic-prediction jobs (cv, train, predict): one frozen config each, the only home of
their defaults, choices, ranges and help (see ``app.engine.jobconfig``). No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from app.data.errors import DataError
from app.data.genotype.readers import ORIENTATIONS
from app.engine.gp.base import DEEP_MODELS, MODEL_NAMES
from app.engine.jobconfig import JobConfig, param

MODEL_HELP = "gblup, dnngp, deepgs, dlgwas or all (comma-separate several; any case)"
ORIENTATION_HELP = ("numeric matrices: samples_x_markers (lines are rows) or markers_x_samples (auto: the axis whose "
                    "IDs join the phenotypes, then the corner cell's word, then the shape)")


BLEND_PREFIX = "gblup+"  # a fitted model "gblup+deepgs": GBLUP blended with a deep model (app.engine.gp.ensemble)
BLEND_KEYS = tuple(BLEND_PREFIX + k for k in DEEP_MODELS)
BLEND_HELP = (f"{MODEL_HELP}; or a blend, {', '.join(BLEND_KEYS)} (GBLUP and the deep model averaged with a "
              "weight chosen on inner validation lines of the training lines, saved with the model)")


def blend_part(key: str) -> str | None:
    """The deep model key of a blend key ("gblup+deepgs" -> "deepgs"), None for a single model."""
    return key[len(BLEND_PREFIX):] if key.startswith(BLEND_PREFIX) else None


def model_keys(models: Any, *, blends: bool = False) -> tuple[str, ...]:
    """Model keys ("gblup", ...) from names in any case, a list or comma strings; "all"/"compare" = all
    single models. With ``blends``, "gblup+deepgs" (any case, e.g. the display name "GBLUP+DeepGS") is a
    model too: the trained blend of GBLUP and that deep model.

    Raises:
        DataError: an unknown name or an empty list.
    """
    items = [models] if isinstance(models, str) else list(models or ())
    hint = f"Use {BLEND_HELP if blends else MODEL_HELP}."
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            key = part.strip().lower().replace(" ", "")
            if not key:
                continue
            if key in ("all", "compare", "compare all", "compareall"):
                out.extend(MODEL_NAMES)
            elif key in MODEL_NAMES or (blends and key in BLEND_KEYS):
                out.append(key)
            else:
                raise DataError(f"unknown model {part.strip()!r}", None, hint)
    if not out:
        raise DataError("no model chosen", None, hint)
    return tuple(dict.fromkeys(out))


ENSEMBLE_HELP = ("deep models to blend with GBLUP, each as its own row (the weight is chosen inside every "
                 "training fold): dnngp, deepgs, dlgwas or all")


def ensemble_keys(value: Any) -> tuple[str, ...]:
    """Deep model keys to blend with GBLUP, from a list or comma strings ("all" = every deep model).

    Raises:
        DataError: a name that is not a deep model.
    """
    items = [value] if isinstance(value, str) else list(value or ())
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            key = part.strip().lower()
            if key in ("", "none"):
                continue
            if key == "all":
                out.extend(DEEP_MODELS)
            elif key in DEEP_MODELS:
                out.append(key)
            else:
                raise DataError(f"cannot blend {part.strip()!r} with GBLUP", None,
                                "An ensemble takes a deep model: dnngp, deepgs, dlgwas or all.")
    return tuple(dict.fromkeys(out))


def _check_ensemble(value: str | None) -> str | None:
    try:
        ensemble_keys(value)
    except DataError as exc:
        return exc.problem
    return None


def _check_models(value: tuple[str, ...]) -> str | None:
    try:
        model_keys(value)
    except DataError as exc:
        return exc.problem
    return None


def _check_fitted_models(value: tuple[str, ...]) -> str | None:
    try:
        model_keys(value, blends=True)
    except DataError as exc:
        return exc.problem
    return None


@dataclass(frozen=True, kw_only=True)
class GPFitConfig(JobConfig):
    """What ``cv`` and ``train`` share: the data, the models and their fitting settings."""

    JOB: ClassVar[str] = "gp"

    geno: str = param(help="genotypes: PLINK .bed (or prefix), VCF(.gz), HapMap .hmp.txt or a numeric matrix",
                      kind="path", metavar="PATH", group="data")
    pheno: str = param(help="phenotype table (CSV/TSV/whitespace, TASSEL, .fam); joined to the genotypes by ID",
                       kind="path", metavar="PATH", group="data")
    trait: str = param(help="trait column (any case) or its 1-based column number (wheat.Y: E1..E4 or 1..4)",
                       metavar="NAME", group="data")
    models: tuple[str, ...] = param(("gblup",), MODEL_HELP, kind="list", flag="--model", metavar="MODEL",
                                    suggestions=("gblup", "deepgs"),
                                    check=_check_models)
    id_column: str | None = param(None, "phenotype column holding the line IDs", metavar="COL", group="data",
                                  none_label="detected")
    orientation: str = param("auto", ORIENTATION_HELP, choices=ORIENTATIONS, group="data")
    epochs: int | None = param(None, "deep models: at most this many epochs", min=1, unit="epochs", advanced=True,
                               metavar="N", none_label="each model's default")
    batch_size: int | None = param(None, "deep models: lines per step", min=1, advanced=True, metavar="N",
                                   none_label="each model's default")
    lr: float | None = param(None, "deep models: learning rate", min=0, min_exclusive=True, advanced=True,
                             none_label="each model's default")
    params: dict[str, Any] = param({}, 'per-model parameters, e.g. \'{"DNNGP": {"preset": "v3"}}\'',  # noqa: RUF009
                                   kind="json", metavar="JSON")  # (param turns a dict default into a factory)
    seed: int = param(0, "fold and training seed", min=0, advanced=True)
    min_maf: float | None = param(None, "drop markers with a lower minor-allele frequency", min=0, max=0.5,
                                  none_label="keep all")
    min_call_rate: float | None = param(None, "drop markers called in a smaller fraction of lines", min=0, max=1,
                                        none_label="keep all")
    max_markers: int | None = param(None, "quick run: this many evenly spaced markers", min=1, advanced=True,
                                    metavar="N", none_label="all")
    max_lines: int | None = param(None, "quick run: this many random phenotyped lines", min=5, metavar="N",
                                  none_label="all")
    threads: int | None = param(None, "CPU threads: the deep networks train one per thread", min=1,
                                group="compute", none_label="the usable cores (at most 8)")

    # whether ``models`` may name a blend ("gblup+deepgs"): a fitted, saved model (train); cv scores
    # blends through its ``ensemble`` setting instead, each beside its parts
    BLENDS: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", model_keys(self.models, blends=self.BLENDS))
        for name, vals in (self.params or {}).items():
            if not isinstance(vals, dict):
                raise DataError(f"params[{name!r}] must be an object of that model's parameters", None,
                                'e.g. \'{"DeepGS": {"epochs": 50}}\'')


@dataclass(frozen=True, kw_only=True)
class GPCVConfig(GPFitConfig):
    """``app.engine.gp.jobs:cv``: every chosen model on the same seeded (grouped) folds."""

    JOB: ClassVar[str] = "gp.cv"

    run_dir: str | None = param(None, "run folder", kind="path", flag="--out", metavar="RUN",
                                none_label="a new one under the runs folder")
    folds: int = param(5, "folds per repeat", min=2, advanced=True)
    repeats: int = param(1, "repeats with reshuffled folds (3 or more give each model's SD over repeats and a 95 % "
                            "interval of its difference to GBLUP)", min=1, advanced=True)
    ensemble: str | None = param(None, ENSEMBLE_HELP, metavar="MODELS", advanced=True, suggestions=("all", "deepgs"),
                                 none_label="none (e.g. deepgs or all)", check=_check_ensemble)
    group: str | None = param(None, "phenotype column (e.g. family): a group never spans train and test",
                              metavar="COL", advanced=True, none_label="random folds")


    def __post_init__(self) -> None:
        super().__post_init__()
        keys = ensemble_keys(self.ensemble)  # one spelling: "deepgs,dlgwas", or None for no ensemble
        object.__setattr__(self, "ensemble", ",".join(keys) or None)


@dataclass(frozen=True, kw_only=True)
class GPTrainConfig(GPFitConfig):
    """``app.engine.gp.jobs:train``: fit on every phenotyped line, save the models and GEBVs of all lines."""

    JOB: ClassVar[str] = "gp.train"
    BLENDS: ClassVar[bool] = True

    models: tuple[str, ...] = param(("gblup",), BLEND_HELP, kind="list", flag="--model", metavar="MODEL",
                                    suggestions=("gblup", "deepgs", "gblup+deepgs"), check=_check_fitted_models)
    run_dir: str = param(help="run folder to create", kind="path", flag="--out", metavar="RUN")


@dataclass(frozen=True, kw_only=True)
class GPPredictConfig(JobConfig):
    """``app.engine.gp.jobs:predict``: predict new lines with a train run's models."""

    JOB: ClassVar[str] = "gp.predict"

    model: str = param(help="folder of a `gp train` run (or RUN/models/NAME)", kind="path", metavar="RUN")
    geno: str = param(help="genotypes of the lines to predict (any format)", kind="path", metavar="PATH",
                      group="data")
    out: str = param(help="predictions table to write (ID + one column per model)", kind="path", metavar="CSV")
    orientation: str = param("auto", ORIENTATION_HELP, choices=ORIENTATIONS, group="data")
    models: tuple[str, ...] | None = param(None, "only these of the run's models", kind="list", metavar="NAMES",
                                           suggestions=("gblup", "deepgs", "gblup+deepgs"),
                                           none_label="all of the run's", check=_check_fitted_models)
    threads: int = param(1, "CPU threads for torch", min=1, group="compute")

    def __post_init__(self) -> None:
        if self.models is not None:
            object.__setattr__(self, "models", model_keys(self.models, blends=True))


__all__ = ["BLEND_HELP", "BLEND_KEYS", "BLEND_PREFIX", "ENSEMBLE_HELP", "MODEL_HELP", "GPCVConfig", "GPFitConfig",
           "GPPredictConfig", "GPTrainConfig", "blend_part", "ensemble_keys", "model_keys"]
