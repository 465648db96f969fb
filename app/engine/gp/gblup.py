"""GBLUP: genomic BLUP with a VanRaden relationship matrix and REML variance components.

Model: ``y = 1 mu + g + e`` with ``g ~ N(0, s2g K)``, ``e ~ N(0, s2e I)``, ``K = W W' / c`` where ``W`` is the
additive genotype matrix centred by the training lines' allele means and ``c = sum_j 2 p_j (1 - p_j)``
(VanRaden 2008; ``p_j (1 - p_j)`` for binary presence/absence markers). The variance ratio
``delta = s2e / s2g`` is estimated by REML the EMMA way (Kang et al. 2008): ``K`` is eigendecomposed once,
after which the restricted log-likelihood of any ``delta`` costs O(n), so a grid over log(delta) plus a
bounded 1-D search finds its maximum.

BLUP of the genetic values and rrBLUP marker effects come from the same solve: with
``alpha = (K + delta I)^-1 (y - 1 mu)``, ``g_hat = K alpha`` and the marker effects are
``b = W' alpha / c`` (so ``g_hat = W b``; GBLUP and ridge-regression BLUP are the same predictor). New lines
are predicted as ``mu + W_new b``, which equals ``mu + K_new,train alpha`` (their genomic relationship to
the training lines times alpha) without forming that matrix. ``importance()`` is ``|b|``.

No Python library does REML GBLUP soundly, so this is written here and tested against the mixed-model
equations solved directly (tests/engine/gp/test_gp_gblup.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from app.data.atomic import atomic_path, write_text_atomic
from app.data.errors import DataError
from app.data.genotype import GenotypeMatrix, additive, marker_means
from app.engine.gp.base import FitNotes
from app.engine.reporter import Reporter

NAME = "gblup"
FORMAT_VERSION = 1
DEFAULTS: dict[str, Any] = {
    "delta": None,  # fixed variance ratio s2e/s2g; None = estimate by REML
    "log_delta_min": -9.0,  # REML search range of ln(delta) (K is scaled so its mean diagonal is ~1-2)
    "log_delta_max": 9.0,
    "grid": 60,  # grid points over that range before the bounded 1-D refinement
}
_MODEL_JSON = "model.json"
_WEIGHTS = "weights.safetensors"


# --------------------------------------------------------------------------------------------------
# Relationship matrix
# --------------------------------------------------------------------------------------------------


def vanraden_scale(means: np.ndarray, coding: str = "dosage") -> float:
    """VanRaden's denominator ``c``: sum over markers of the expected per-line variance of the coding.

    ``means`` are per-marker means on the coding's scale (0..2 for dosages, 0..1 for binary markers).
    """
    m = np.asarray(means, dtype=np.float64)
    if coding == "binary":
        c = float(np.sum(m * (1.0 - m)))
    else:
        p = m / 2.0
        c = float(np.sum(2.0 * p * (1.0 - p)))
    return c if c > 0 else 1.0  # all markers monomorphic: K = 0 anyway, keep the division harmless


def centred(geno: GenotypeMatrix, means: np.ndarray) -> np.ndarray:
    """``W``: additive coding (missing calls imputed with ``means``) minus ``means``, float64 (n, m)."""
    x = additive(geno, means=means).astype(np.float64)
    x -= np.asarray(means, dtype=np.float64)
    return x


def vanraden_grm(geno: GenotypeMatrix, means: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """VanRaden genomic relationship matrix of ``geno``'s lines.

    Returns ``(K, means, c)``; ``means`` default to these lines' marker means (pass the training lines'
    means to relate other lines on the same scale).
    """
    mu = marker_means(geno).astype(np.float64) if means is None else np.asarray(means, dtype=np.float64)
    w = centred(geno, mu)
    c = vanraden_scale(mu, geno.coding)
    return (w @ w.T) / c, mu, c


# --------------------------------------------------------------------------------------------------
# REML on the spectral decomposition
# --------------------------------------------------------------------------------------------------


@dataclass
class Spectral:
    """``K = U diag(s) U'`` and the rotated fixed-effect design and phenotypes."""

    s: np.ndarray  # eigenvalues (n,), clipped at 0
    u: np.ndarray  # eigenvectors (n, n)
    xs: np.ndarray  # U' X (n, q)
    ys: np.ndarray  # U' y (n,) or (n, t)

    @classmethod
    def of(cls, k: np.ndarray, y: np.ndarray, x: np.ndarray | None = None) -> Spectral:
        """Eigendecompose ``K`` once (symmetrised) and rotate ``X`` (default: intercept) and ``y``."""
        n = k.shape[0]
        x = np.ones((n, 1)) if x is None else np.asarray(x, dtype=np.float64).reshape(n, -1)
        s, u = np.linalg.eigh((k + k.T) / 2.0)
        s = np.clip(s, 0.0, None)  # round-off gives tiny negative eigenvalues of a PSD matrix
        return cls(s=s, u=u, xs=u.T @ x, ys=u.T @ np.asarray(y, dtype=np.float64))


def _gls(sp: Spectral, ys: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """For one trait: (beta, rotated residual / d, residual quadratic form R, log|X' H^-1 X|)."""
    d = sp.s + delta
    xw = sp.xs / d[:, None]
    a = sp.xs.T @ xw
    beta = np.linalg.solve(a, xw.T @ ys)
    r = ys - sp.xs @ beta
    quad = float(np.sum(r * r / d))
    _, logdet_a = np.linalg.slogdet(a)
    return beta, r / d, quad, float(logdet_a)


def reml_loglik(sp: Spectral, ys: np.ndarray, delta: float) -> float:
    """Restricted log-likelihood at variance ratio ``delta`` with ``s2g`` profiled out (constants dropped
    that do not depend on ``delta``)."""
    n, q = sp.xs.shape
    _, _, quad, logdet_a = _gls(sp, ys, delta)
    dof = n - q
    return -0.5 * (dof * np.log(max(quad, 1e-300) / dof) + float(np.sum(np.log(sp.s + delta))) + logdet_a + dof)


@dataclass
class REMLResult:
    """Variance components of one trait."""

    delta: float  # s2e / s2g
    sigma_g2: float
    sigma_e2: float
    h2: float  # s2g * mean(diag K) / (s2g * mean(diag K) + s2e)
    loglik: float
    at_bound: bool = False

    def to_dict(self) -> dict[str, float | bool]:
        return {"delta": self.delta, "sigma_g2": self.sigma_g2, "sigma_e2": self.sigma_e2, "h2": self.h2,
                "reml_loglik": self.loglik, "at_bound": self.at_bound}


def reml(sp: Spectral, ys: np.ndarray, *, log_delta_min: float = -9.0, log_delta_max: float = 9.0,
         grid: int = 60) -> REMLResult:
    """REML estimate of ``delta`` for one (rotated) trait: grid over ln(delta), then bounded Brent search
    between the neighbours of the best grid point (EMMA's grid + local refinement)."""
    n, q = sp.xs.shape
    if n - q < 2:
        raise DataError(f"REML needs at least {q + 2} lines with a phenotype, got {n}", None,
                        "use more phenotyped lines")
    grid_pts = np.linspace(log_delta_min, log_delta_max, max(int(grid), 3))
    ll = np.array([reml_loglik(sp, ys, float(np.exp(t))) for t in grid_pts])
    i = int(np.argmax(ll))
    lo, hi = grid_pts[max(i - 1, 0)], grid_pts[min(i + 1, len(grid_pts) - 1)]
    res = minimize_scalar(lambda t: -reml_loglik(sp, ys, float(np.exp(t))), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    t_best, ll_best = (float(res.x), float(-res.fun)) if -res.fun >= ll[i] else (float(grid_pts[i]), float(ll[i]))
    delta = float(np.exp(t_best))
    _, _, quad, _ = _gls(sp, ys, delta)
    s2g = quad / (n - q)
    s2e = delta * s2g
    mean_diag = float(np.mean(sp.s))  # = trace(K) / n
    vg = s2g * mean_diag
    h2 = vg / (vg + s2e) if vg + s2e > 0 else 0.0
    at_bound = i in (0, len(grid_pts) - 1)
    return REMLResult(delta=delta, sigma_g2=float(s2g), sigma_e2=float(s2e), h2=float(h2), loglik=ll_best,
                      at_bound=at_bound)


def blup(sp: Spectral, ys: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """GLS fixed effects and ``alpha = (K + delta I)^-1 (y - X beta)`` for one rotated trait."""
    beta, r_over_d, _, _ = _gls(sp, ys, delta)
    return beta, sp.u @ r_over_d


# --------------------------------------------------------------------------------------------------
# The fitted model
# --------------------------------------------------------------------------------------------------


@dataclass
class GBLUPModel:
    """A fitted GBLUP: training allele means, scale, intercept and marker effects (rrBLUP form).

    ``predict`` needs genotypes on the training markers, in the training order (use
    ``app.data.genotype.align_markers`` for new files).
    """

    means: np.ndarray  # (m,) training marker means used for centring and imputation
    scale: float  # VanRaden c
    intercept: np.ndarray  # (t,)
    effects: np.ndarray  # (m, t) marker effects b
    marker_ids: list[str]
    coding: str = "dosage"
    traits: list[str] = field(default_factory=lambda: ["y"])
    varcomp: list[dict[str, Any]] = field(default_factory=list)
    notes: FitNotes = field(default_factory=FitNotes)
    name: str = NAME
    multi: bool = False  # fitted on a 2-D y: predict returns (n, t)

    def _check(self, geno: GenotypeMatrix) -> None:
        if geno.n_markers != len(self.marker_ids):
            raise DataError(
                f"the genotypes have {geno.n_markers} markers but the GBLUP model was fitted on "
                f"{len(self.marker_ids)}", geno.source or None,
                "align the genotypes to the model's markers first (app.data.genotype.align_markers)")
        ids = [str(x) for x in geno.markers["id"]]
        if ids != self.marker_ids:
            raise DataError("the genotypes' markers differ from the model's (IDs or order)", geno.source or None,
                            "align the genotypes to the model's markers first (app.data.genotype.align_markers)")

    def genetic_values(self, geno: GenotypeMatrix) -> np.ndarray:
        """``W_new b`` (n, t): predictions without the intercept."""
        self._check(geno)
        return centred(geno, self.means) @ self.effects

    def predict(self, geno: GenotypeMatrix) -> np.ndarray:
        """Predicted phenotypes ``mu + W_new b`` on the trait's scale: (n,) for one trait, else (n, t)."""
        out = self.genetic_values(geno) + self.intercept[None, :]
        return out if self.multi else out[:, 0]

    def importance(self) -> np.ndarray:
        """|marker effect| per marker (mean over traits when several)."""
        return np.abs(self.effects).mean(axis=1)

    def save(self, folder: str | Path) -> None:
        """``model.json`` (settings, markers, variance components) + ``weights.safetensors`` (arrays)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"means": np.ascontiguousarray(self.means, dtype=np.float64),
                  "effects": np.ascontiguousarray(self.effects, dtype=np.float64),
                  "intercept": np.ascontiguousarray(self.intercept, dtype=np.float64)}
        with atomic_path(folder / _WEIGHTS) as tmp:
            save_file(arrays, str(tmp))
        meta = {"model": NAME, "format_version": FORMAT_VERSION, "scale": self.scale, "coding": self.coding,
                "traits": self.traits, "multi": self.multi, "marker_ids": self.marker_ids,
                "varcomp": self.varcomp, "warnings": self.notes.warnings, "info": self.notes.info}
        write_text_atomic(folder / _MODEL_JSON, json.dumps(meta, default=float))


def is_gblup_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds a saved GBLUP model."""
    p = Path(folder) / _MODEL_JSON
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("model") == NAME
    except (OSError, ValueError):
        return False


def load_gblup(folder: str | Path) -> GBLUPModel:
    """Load a model written by ``GBLUPModel.save``."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not is_gblup_folder(folder):
        raise DataError("not a saved GBLUP model (no model.json with model = gblup)", folder,
                        "give the folder written by `gp train` (RUN/models/GBLUP)")
    meta = json.loads((folder / _MODEL_JSON).read_text(encoding="utf-8"))
    try:
        arr = load_file(str(folder / _WEIGHTS))
    except Exception as exc:  # safetensors raises several types on a damaged file
        raise DataError(f"cannot read the GBLUP weights ({exc})", folder / _WEIGHTS, "re-run `gp train`") from None
    notes = FitNotes(warnings=list(meta.get("warnings", [])), info=dict(meta.get("info", {})))
    return GBLUPModel(means=arr["means"], scale=float(meta["scale"]), intercept=arr["intercept"],
                      effects=arr["effects"], marker_ids=[str(x) for x in meta["marker_ids"]],
                      coding=str(meta.get("coding", "dosage")), traits=list(meta.get("traits", ["y"])),
                      varcomp=list(meta.get("varcomp", [])), notes=notes, multi=bool(meta.get("multi", False)))


def fit_gblup(train: GenotypeMatrix, y: np.ndarray, *, params: dict[str, Any] | None = None, seed: int = 0,
              device: str = "cpu", reporter: Reporter | None = None,
              all_geno: GenotypeMatrix | None = None) -> GBLUPModel:
    """Fit GBLUP on the training lines (``FitFn`` of ``app.engine.gp.base``).

    Everything (allele means, imputation, scale, REML, BLUP) comes from ``train`` and ``y`` only;
    ``seed``, ``device`` and ``all_geno`` are accepted for the common signature and not used (the fit is
    deterministic, on the CPU, and not transductive).

    Args:
        train: training genotypes (n, m).
        y: phenotypes (n,) or (n, t), no NaN.
        params: ``delta`` (fix s2e/s2g instead of REML), ``log_delta_min``/``log_delta_max``/``grid`` (the
            REML search).
    """
    p = {**DEFAULTS, **(params or {})}
    unknown = set(p) - set(DEFAULTS)
    if unknown:
        raise DataError(f"unknown GBLUP parameter(s): {', '.join(sorted(unknown))}", None,
                        f"use: {', '.join(DEFAULTS)}")
    yy = np.asarray(y, dtype=np.float64)
    multi = yy.ndim == 2
    y2 = yy.reshape(len(yy), -1)
    if y2.shape[0] != train.n_samples:
        raise DataError(f"{train.n_samples} training lines but {y2.shape[0]} phenotype values")
    if not np.isfinite(y2).all():
        raise DataError("the phenotypes given to GBLUP contain NaN/inf", None, "drop lines without a phenotype")
    notes = FitNotes()
    means = marker_means(train).astype(np.float64)
    w = centred(train, means)  # once: the GRM and the marker effects both need it
    c = vanraden_scale(means, train.coding)
    sp = Spectral.of((w @ w.T) / c, y2)
    m = train.n_markers
    effects = np.zeros((m, y2.shape[1]))
    intercept = np.zeros(y2.shape[1])
    varcomp: list[dict[str, Any]] = []
    for j in range(y2.shape[1]):
        ys = sp.ys[:, j]
        if p["delta"] is not None:
            delta = float(p["delta"])
            if not delta > 0:
                raise DataError(f"GBLUP delta must be > 0, got {delta}")
            vc: dict[str, Any] = {"delta": delta, "fixed": True}
        else:
            if float(np.var(y2[:, j])) == 0.0:
                raise DataError("the trait has the same value on every training line", None,
                                "nothing to predict: pick another trait")
            r = reml(sp, ys, log_delta_min=p["log_delta_min"], log_delta_max=p["log_delta_max"], grid=p["grid"])
            delta = r.delta
            vc = r.to_dict()
            if r.at_bound:
                notes.warnings.append(
                    f"GBLUP: REML variance ratio at the edge of its search range (h2 ~ {r.h2:.2f}); "
                    "the markers explain almost nothing or almost everything of this trait")
        beta, alpha = blup(sp, ys, delta)
        intercept[j] = float(beta[0])
        effects[:, j] = (w.T @ alpha) / c
        varcomp.append(vc)
    notes.info["varcomp"] = varcomp
    traits = [f"y{j + 1}" for j in range(y2.shape[1])] if multi else ["y"]
    return GBLUPModel(means=means, scale=c, intercept=intercept, effects=effects,
                      marker_ids=[str(x) for x in train.markers["id"]], coding=train.coding, traits=traits,
                      varcomp=varcomp, notes=notes, multi=multi)


__all__ = ["DEFAULTS", "GBLUPModel", "REMLResult", "Spectral", "blup", "centred", "fit_gblup", "is_gblup_folder",
           "load_gblup", "reml", "reml_loglik", "vanraden_grm", "vanraden_scale"]
