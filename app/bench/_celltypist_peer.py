"""Run by ``bench annotate`` with a python that has celltypist (a separate environment: celltypist 1.7.1 needs
scikit-learn < 1.7). Imports nothing of OmicsLab. Usage: ``python _celltypist_peer.py DIR`` where DIR holds
``data.h5ad`` (raw counts, ``obs['label']``) and ``splits.json`` (``[{"train": [...], "test": [...]}]``); writes
``DIR/predictions.json``: ``{"feature_selection": [[test labels], ...], "default": [...], "notes": [...]}``.
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
    out: dict[str, list] = {"feature_selection": [], "default": [], "notes": []}
    for s in splits:
        tr, te = a[np.asarray(s["train"])].copy(), a[np.asarray(s["test"])].copy()
        # feature selection keeps top_genes genes per class and refuses a panel of top_genes genes or fewer
        # (a 160- or 200-gene panel): there it would keep every gene, i.e. be the default form
        small = int((np.asarray(tr.X.sum(axis=0)).ravel() > 0).sum()) <= 300
        for form, fs in (("default", False), ("feature_selection", True)):
            if fs and small:
                out[form].append(out["default"][-1])
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = celltypist.train(tr, labels="label", feature_selection=fs, n_jobs=1, use_GPU=False)
                pred = celltypist.annotate(te, model=model, majority_voting=False)
            out[form].append([str(v) for v in pred.predicted_labels["predicted_labels"].tolist()])
        if small and not out["notes"]:
            out["notes"].append("CellTypist feature selection needs more than 300 genes: its default form "
                                "(all genes) stands for both")
    if not out["notes"]:
        del out["notes"]  # the key is there only when there is something to say
    (d / "predictions.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
