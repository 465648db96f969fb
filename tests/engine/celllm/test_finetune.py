"""Fine-tuning CellLM for cell types, end to end on a small subsample of a shared dataset (CPU, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from app.data.errors import DataError
from app.engine.celllm.finetune import apply_freeze, class_weights, encoder_groups, finetune, stratified_subsample
from app.engine.reporter import Reporter

torch.set_num_threads(1)

PBMC = "singlecell/pbmc8k_hvg200_h5ad/pbmc.h5ad"


def _small_pbmc(shared_data: Path, tmp_path: Path, n: int = 160, seed: int = 0) -> tuple[Path, ad.AnnData]:
    """A stratified subsample of the shared PBMC file written as a tmp .h5ad (never copied into the repo)."""
    a = ad.read_h5ad(shared_data / PBMC)
    keep = stratified_subsample(a.obs["cell_type"].astype(str).to_numpy(), n, seed)
    sub = a[keep].copy()
    path = tmp_path / "pbmc_small.h5ad"
    sub.write_h5ad(path)
    return path, sub


def _cfg(data: Path, run: Path, **kw: object) -> dict:
    return {"data": str(data), "label_key": "cell_type", "run_dir": str(run), "epochs": 1, "batch_size": 32,
            "max_len": 64, "seed": 0, "device": "cpu", "threads": 1, "baseline_genes": 100, **kw}


@pytest.mark.shared_data
def test_finetune_end_to_end_writes_metrics(shared_data: Path, tmp_path: Path) -> None:
    data, sub = _small_pbmc(shared_data, tmp_path)
    run = tmp_path / "run"
    rep = Reporter(keep=True)
    res = finetune(_cfg(data, run), rep)
    m = json.loads((run / "metrics.json").read_text())
    for key in ("test", "baseline", "n_train", "n_test", "classes"):
        assert key in m
    for part in ("test", "baseline"):
        assert 0.0 <= m[part]["accuracy"] <= 1.0 and 0.0 <= m[part]["macro_f1"] <= 1.0
        assert set(m[part]["per_class_f1"]) <= set(m["classes"]) | set(m.get("test_only_classes", []))
        cm = np.array(m[part]["confusion"]["matrix"])
        assert cm.sum() == m["n_test"]  # both methods scored on the same test cells
    n_labelled = int((sub.obs["cell_type"].astype(str) != "NA").sum())
    assert m["n_train"] + m["n_val"] + m["n_test"] == n_labelled  # NA cells dropped, every other cell used
    assert "NA" not in m["classes"]
    assert res["test"]["accuracy"] == m["test"]["accuracy"]
    # per-epoch metrics reported and logged, checkpoint per epoch, model + head saved for embed
    vals = [e for e in rep.history if type(e).__name__ == "Metrics" and e.split == "val"]
    assert vals and {"train_loss", "val_macro_f1", "val_accuracy"} <= set(vals[-1].values)
    assert (run / "model" / "head.safetensors").is_file()
    assert any((run / "checkpoints").glob("*.safetensors"))
    pred = (run / "test_predictions.csv").read_text().splitlines()
    assert len(pred) == m["n_test"] + 1
    emb = np.load(run / "test_embeddings.npy")
    assert emb.shape[0] == m["n_test"] and np.isfinite(emb).all()
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])


@pytest.mark.shared_data
def test_finetune_one_class_refused(shared_data: Path, tmp_path: Path) -> None:
    _, sub = _small_pbmc(shared_data, tmp_path, n=40)
    sub.obs["one"] = "T cell"
    path = tmp_path / "one.h5ad"
    sub.write_h5ad(path)
    with pytest.raises(DataError, match="two classes"):
        finetune(_cfg(path, tmp_path / "run1", label_key="one"))


@pytest.mark.shared_data
def test_finetune_missing_label_column_lists_columns(shared_data: Path, tmp_path: Path) -> None:
    path, _ = _small_pbmc(shared_data, tmp_path, n=40)
    with pytest.raises(DataError, match="cell_type"):
        finetune(_cfg(path, tmp_path / "run2", label_key="celltype_typo"))


@pytest.mark.shared_data
def test_finetune_reports_classes_in_test_not_train_and_resumes(shared_data: Path, tmp_path: Path) -> None:
    _, sub = _small_pbmc(shared_data, tmp_path, n=120)
    y = sub.obs["cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(1)
    split = rng.choice(np.array(["train", "val", "test"]), size=len(y), p=[0.6, 0.2, 0.2])
    split[np.isin(y, ["HSC", "Erythrocytes"])] = "train"  # rare classes: train only
    split[y == "NK cells"] = "test"  # NK cells only in test: cannot be learned, must be reported
    for cls in ("B-cells", "Monocytes", "CD4+ T-cells", "CD8+ T-cells"):  # keep each trained class in all splits
        idx = np.flatnonzero(y == cls)
        split[idx[:2]], split[idx[2]], split[idx[3]] = "train", "val", "test"
    sub.obs["split"] = split
    path = tmp_path / "split.h5ad"
    sub.write_h5ad(path)
    run = tmp_path / "run3"

    class StopAfter(Reporter):
        """Asks to stop after the first training batch (the GUI's Cancel button)."""

        def progress(self, step: int, total: int, epoch: int | None = None) -> None:
            super().progress(step, total, epoch)
            self.request_stop()

    res = finetune(_cfg(path, run, split_key="split", epochs=2, batch_size=16), StopAfter())
    assert res["cancelled"] is True and any((run / "checkpoints").glob("*.safetensors"))
    assert not (run / "metrics.json").exists()
    m = finetune(_cfg(path, run, split_key="split", epochs=2, batch_size=16, resume=True))
    assert m["test_only_classes"] == ["NK cells"]
    assert "NK cells" not in m["classes"]
    assert any("not in train" in n for n in m["notes"])
    assert m["history"][-1]["epoch"] == 2


def test_class_weights_balanced() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])
    assert float(w[0] * 3) == pytest.approx(float(w[1] * 1))  # each class weighs the same in total


class Enc(torch.nn.Module):
    """A stand-in encoder: embeddings, 3 layers, a final norm (the parts freezing and layer-wise rates see)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        self.norm = torch.nn.LayerNorm(4)


def test_freeze_modes_on_a_stand_in_encoder() -> None:
    m = Enc()
    apply_freeze(m, "last:1", depth=3)
    assert not m.emb.weight.requires_grad
    assert [lay.weight.requires_grad for lay in m.layers] == [False, False, True]
    assert m.norm.weight.requires_grad
    m = Enc()
    counts = apply_freeze(m, "encoder")
    assert counts["trainable"] == 0
    with pytest.raises(DataError):
        apply_freeze(Enc(), "last:9", depth=3)


def test_layer_wise_learning_rates_fall_from_the_top_layer_down() -> None:
    m = Enc()
    lr_of = {id(p): g["lr"] for g in encoder_groups(m, 1e-3, 0.5) for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in m.parameters())  # every trainable parameter once
    assert [lr_of[id(lay.weight)] for lay in m.layers] == pytest.approx([2.5e-4, 5e-4, 1e-3])
    assert lr_of[id(m.norm.weight)] == pytest.approx(1e-3)  # above the layers: the top rate
    assert lr_of[id(m.emb.weight)] == pytest.approx(1.25e-4)  # below the bottom layer
    (one,) = encoder_groups(m, 1e-3, 1.0)
    assert one["lr"] == 1e-3 and len(one["params"]) == len(lr_of)
    apply_freeze(m, "last:1", depth=3)  # frozen parameters get no group
    kept = {id(p) for g in encoder_groups(m, 1e-3, 0.5) for p in g["params"]}
    assert kept == {id(p) for p in m.parameters() if p.requires_grad}


@pytest.mark.shared_data
def test_mean_pooling_and_layer_decay_reach_the_saved_model(shared_data: Path, tmp_path: Path) -> None:
    from app.engine.celllm.embed import load_for_inference

    data, _ = _small_pbmc(shared_data, tmp_path)
    run = tmp_path / "run"
    finetune(_cfg(data, run, pooling="mean", layer_lr_decay=0.5, label_smoothing=0.1), Reporter())
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 1
    assert load_for_inference(run / "model", torch.device("cpu")).pooling == "mean"  # embed/annotate read it
    # fine-tuning again from that model without naming a pooling keeps its mean (it was cls: the config's default)
    again = finetune(_cfg(data, tmp_path / "again", init=str(run)), Reporter())
    assert again["pooling"] == "mean"
    assert load_for_inference(tmp_path / "again" / "model", torch.device("cpu")).pooling == "mean"
    # a pooling the user names wins, and the log says it differs from the starting model's
    lines: list[str] = []
    named = finetune(_cfg(data, tmp_path / "named", init=str(run), pooling="cls"),
                     Reporter(lambda ev: lines.append(getattr(ev, "line", ""))))
    assert named["pooling"] == "cls"
    assert any("cls as asked; the starting model was trained with mean" in line for line in lines), lines


def test_pooling_auto_takes_the_recorded_one_and_refuses_an_unknown_one() -> None:
    from app.engine.celllm.finetune import resolve_pooling

    assert resolve_pooling("auto", "mean")[0] == "mean"
    assert resolve_pooling("auto", None)[0] == "cls"  # a model that records none: the published default
    assert resolve_pooling("mean", "cls") == ("mean", "pooling: mean as asked; the starting model was trained with cls")
    assert resolve_pooling("cls", "cls") == ("cls", "pooling: cls")
    with pytest.raises(DataError, match="records pooling 'max'") as e:
        resolve_pooling("auto", "max", "/models/x")
    assert "--pooling cls" in str(e.value)
    assert resolve_pooling("mean", "max")[0] == "mean"  # named: no guess needed


def test_fine_tuning_optimizer_follows_unfused_adamw() -> None:
    """The fused optimizer takes the same steps as plain AdamW, per-group weight decay included
    (torch's fused CPU Adam with weight decay does not; this guards against that class of drift)."""
    import copy

    from app.engine.celllm.finetune import make_optimizer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    ref = copy.deepcopy(net)

    def groups(m: torch.nn.Sequential) -> list[dict]:
        return [{"params": list(m[0].parameters()), "lr": 1e-3},
                {"params": list(m[2].parameters()), "lr": 1e-2, "weight_decay": 0.0}]

    fused = make_optimizer(groups(net), 0.05, torch.device("cpu"))
    plain = torch.optim.AdamW(groups(ref), weight_decay=0.05)
    assert fused.defaults.get("fused")
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    for _ in range(100):
        for m, opt in ((net, fused), (ref, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-5), (p - q).abs().max()
