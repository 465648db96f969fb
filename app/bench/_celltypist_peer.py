"""Run by ``bench annotate`` with a python that has celltypist (a separate environment: celltypist 1.7.1 needs
scikit-learn < 1.7). Imports nothing of OmicsLab. Usage: ``python _celltypist_peer.py DIR`` where DIR holds
``data.h5ad`` (raw counts, ``obs['label']``) and ``splits.json`` (``[{"train": [...], "test": [...]}]``); writes
``DIR/predictions.json``: ``{"feature_selection": [[test labels], ...], "default": [...]}``, one list per split.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def main(folder: str) -> None:
    """CellTypist's own training (``celltypist.train``) on each split's training cells, labels of its test cells."""
    import anndata as ad
    import celltypist
    import numpy as np
    import scanpy as sc

    d = Path(folder)
    a = ad.read_h5ad(d / "data.h5ad")
    sc.pp.normalize_total(a, target_sum=1e4)  # CellTypist's expected input: log1p of counts per 1e4
    sc.pp.log1p(a)
    splits = json.loads((d / "splits.json").read_text())
    out: dict[str, list[list[str]]] = {"feature_selection": [], "default": []}
    for s in splits:
        tr, te = a[np.asarray(s["train"])].copy(), a[np.asarray(s["test"])].copy()
        for form, fs in (("feature_selection", True), ("default", False)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # top_genes above the count of expressed genes is refused (a 160-gene panel): keep them all
                expressed = int((np.asarray(tr.X.sum(axis=0)).ravel() > 0).sum())
                model = celltypist.train(tr, labels="label", feature_selection=fs, n_jobs=1, use_GPU=False,
                                         top_genes=min(300, expressed))
                pred = celltypist.annotate(te, model=model, majority_voting=False)
            out[form].append([str(v) for v in pred.predicted_labels["predicted_labels"].tolist()])
    (d / "predictions.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
