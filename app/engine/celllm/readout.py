"""The linear path of fine-tuning's ``cls+linear`` readout: genes, scaling, features, and its file.

A fine-tuned model with this readout classifies a cell from the sum of two logit vectors: the pooled-embedding
head's and a linear model's over the fine-tuning data's genes, scaled as CellTypist scales them (log1p of
counts per 1e4; each gene standardised with the training cells' mean and SD; clipped at +10). The gene list
and the mean/scale are stored with the weights (``model/readout.safetensors``), so ``celllm annotate``,
``celllm embed`` and the window apply the same scaling to new data; a gene the new data lacks is imputed at
the training mean (scaled value 0), and the log-normalisation uses the new data's own totals per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from app.models.celllm.heads import LinearReadout

READOUT_FILE = "readout.safetensors"


@dataclass
class Features:
    """Scaled inputs of the linear path for a set of cells (computed per batch from sparse log counts)."""

    lognorm: sp.csr_matrix  # cells x readout genes (columns of absent genes are empty)
    mean: np.ndarray
    scale: np.ndarray
    present: np.ndarray  # bool per readout gene: False = the data lacks it (imputed at the training mean)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """[len(idx), G] float32, scaled and clipped; absent genes 0 (= the training mean)."""
        from app.engine.celllm.baseline import standardise

        x = standardise(self.lognorm[np.asarray(idx)].toarray(), self.mean, self.scale)
        x[:, ~self.present] = 0.0
        return x.astype(np.float32, copy=False)

    def take(self, idx: np.ndarray) -> Features:
        """The features of a subset of the cells (same order as ``idx``)."""
        return Features(self.lognorm[np.asarray(idx)], self.mean, self.scale, self.present)


@dataclass
class Readout:
    """The linear path: its module, gene names and the training mean/scale of each gene."""

    module: LinearReadout
    genes: list[str]
    mean: np.ndarray
    scale: np.ndarray

    def features(self, counts: Any, var_names: Any) -> Features:
        """``Features`` of every cell of a counts matrix whose columns are ``var_names``."""
        from app.data.genes import strip_version
        from app.engine.celllm.baseline import log_normalise

        names = [str(v) for v in var_names]
        col: dict[str, int] = {}
        loose: dict[str, int] = {}
        for j, n in enumerate(names):
            col.setdefault(n, j)  # first occurrence of a duplicated name
            loose.setdefault(_loose_key(n, strip_version), j)
        # exact name first; else the same gene written another way (an Ensembl version suffix, another case:
        # ``ENSG...14`` vs ``ENSG...``, ``Cd3e`` vs ``CD3E``), as the vocabulary match of the encoder does
        src = np.array([col.get(g, loose.get(_loose_key(g, strip_version), -1)) for g in self.genes])
        present = src >= 0
        x = log_normalise(counts)  # the data's own totals over all its genes, as CellTypist
        k, g = int(present.sum()), len(self.genes)
        # a 0/1 matrix moves the data's columns to their readout positions (absent genes stay empty)
        place = sp.csr_matrix((np.ones(k, np.float32), (np.arange(k), np.flatnonzero(present))), shape=(k, g))
        sel = sp.csr_matrix(x[:, src[present]] @ place, dtype=np.float32)
        return Features(sel, self.mean, self.scale, present)

    def n_missing(self, features: Features) -> int:
        """Readout genes the data lacks."""
        return int((~features.present).sum())

    def save(self, folder: str | Path, classes: list[str]) -> Path:
        """Write ``folder/readout.safetensors`` (weights, mean, scale; genes and classes in the metadata)."""
        from app.engine.checkpoint import save_tensors

        tensors = dict(self.module.state_dict())  # linear.weight, linear.bias
        tensors["mean"] = torch.as_tensor(self.mean, dtype=torch.float32)
        tensors["scale"] = torch.as_tensor(self.scale, dtype=torch.float32)
        return save_tensors(Path(folder) / READOUT_FILE, tensors,
                            {"genes": list(self.genes), "classes": list(classes), "kind": "cls+linear",
                             "scaling": "log1p(counts per 1e4), (x - mean) / scale, clipped at 10"})


def _loose_key(name: str, strip_version: Any) -> str:
    """A gene name without surrounding space, Ensembl version or case."""
    return strip_version(name.strip()).upper()


def from_fit(fit: Any, var_names: Any, init: str) -> Readout:
    """A readout over a fitted baseline's genes (``baseline.FittedLinear``), with its coefficients
    (``init="baseline"``) or from zero (``init="zero"``)."""
    names = np.asarray([str(v) for v in var_names])[np.asarray(fit.genes)]
    module = LinearReadout(len(names), len(fit.classes))
    if init == "baseline":
        with torch.no_grad():
            module.linear.weight.copy_(torch.as_tensor(fit.coef))
            module.linear.bias.copy_(torch.as_tensor(fit.intercept))
    elif init != "zero":
        raise ValueError(f"linear_init must be 'baseline' or 'zero', not {init!r}")
    return Readout(module, names.tolist(), np.asarray(fit.mean, np.float32), np.asarray(fit.scale, np.float32))


def load_readout(folder: str | Path, device: torch.device | str = "cpu") -> Readout | None:
    """The readout stored in a model folder, or None when the model has none."""
    from app.engine.checkpoint import load_tensors

    path = Path(folder) / READOUT_FILE
    if not path.is_file():
        return None
    tensors, meta = load_tensors(path, device="cpu")
    genes = list(meta["genes"])
    w = tensors["linear.weight"]
    module = LinearReadout(w.shape[1], w.shape[0])
    module.load_state_dict({k: v for k, v in tensors.items() if k.startswith("linear.")})
    return Readout(module.to(device).eval(), genes, tensors["mean"].numpy(), tensors["scale"].numpy())


__all__ = ["READOUT_FILE", "Features", "Readout", "from_fit", "load_readout"]
