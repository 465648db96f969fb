"""The settings of the CellLM jobs (fine-tune, pretrain, embed): one frozen config each, the only home of
their defaults, choices, ranges and help (see ``app.engine.jobconfig``). Light to import: no torch, so the
CLI builds its options and the window its form without loading a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from app.engine.jobconfig import JobConfig, param

PRESETS = ("tiny", "small", "full")
"""The model sizes (``app.models.celllm.config`` defines them; named here so the CLI need not import torch;
a test checks the two agree)."""
FREEZE_MODES = ("none", "embeddings", "encoder", "last:1", "last:2")
"""What a form offers for ``freeze``; any ``last:K`` is valid."""
FINETUNE_LR_BY_PRESET = {"tiny": 5e-4, "small": 2e-4, "full": 1e-4}
"""Fine-tuning's encoder learning rate when ``lr`` is None: the original CellLM fine-tunes its 52 M-parameter
model with Adam 1e-4; the small presets need larger steps (tiny at 1e-4 was still improving after 10 epochs on
700 cells). Here, not in finetune.py, so the option's help is written from the same numbers."""
PRETRAIN_LR_BY_PRESET = {"tiny": 1e-3, "small": 5e-4, "full": 1e-4}
"""Pretraining's peak learning rate when ``lr`` is None."""
FINETUNE_MAX_LEN = 1024
"""Top-expressed genes fine-tuning keeps per cell when neither the user nor the starting model sets ``max_len``."""


def _by_preset(table: dict[str, float]) -> str:
    """``tiny 5e-4, small 2e-4, full 1e-4``: a per-preset table as an option's help shows it."""
    return ", ".join(f"{k} {v:.0e}".replace("e-0", "e-") for k, v in table.items())


def _check_freeze(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("none", "embeddings", "encoder"):
        return None
    if v.startswith("last:") and v[5:].isdigit():
        return None
    return f"unknown freeze mode {value!r}: use none, embeddings, encoder or last:K (K a whole number)"


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(JobConfig):
    """``app.engine.celllm.finetune:finetune``: fine-tune CellLM for cell-type annotation."""

    JOB: ClassVar[str] = "celllm.finetune"

    data: str = param(help="single-cell counts with labels (h5ad, 10x folder/h5, loom, CSV/TSV)", kind="path",
                      metavar="PATH", group="data")
    label_key: str | None = param(None, "label column: an .obs column, or a column of the labels table",
                                  metavar="COL", group="data", none_label="the labels table's only column")
    labels: str | None = param(None, "labels table joined by cell ID", kind="path", metavar="FILE", group="data")
    run_dir: str = param(help="run folder (writes RUN/metrics.json)", kind="path", flag="--out", metavar="RUN")
    init: str | None = param(None, "starting model: a run folder, model folder or checkpoint", kind="path",
                             metavar="RUN_OR_CKPT", none_label="the shipped pretrained tiny CellLM")
    resume: bool = param(False, "continue RUN from its last checkpoint")
    split_key: str | None = param(None, "a train/val/test column to use instead of a random stratified split",
                                  metavar="COL", group="data")
    epochs: int = param(10, "at most this many passes over the training cells", min=1, unit="epochs",
                        advanced=True, metavar="E")
    batch_size: int = param(32, "cells per training step", min=1, unit="cells", advanced=True, metavar="N")
    lr: float | None = param(None, "encoder learning rate", min=0, min_exclusive=True, advanced=True,
                             none_label=f"by model size ({_by_preset(FINETUNE_LR_BY_PRESET)})")
    head_lr: float = param(1e-3, "learning rate of the new classifier head (it learns faster)", min=0,
                           min_exclusive=True, advanced=True)
    weight_decay: float = param(0.01, "AdamW weight decay", min=0, advanced=True)
    patience: int = param(3, "early stopping: epochs without a better validation macro-F1 before stopping "
                             "(0: stop at the first epoch that does not improve)", min=0, unit="epochs",
                          advanced=True)
    freeze: str = param("none", "what to keep fixed: none (train all), embeddings, encoder (train only the "
                                "head), last:K (train only the last K encoder layers + head)",
                        suggestions=FREEZE_MODES, check=_check_freeze, advanced=True, metavar="MODE")
    val_frac: float = param(0.15, "fraction of each class held out for validation (early stopping)", min=0,
                            min_exclusive=True, max=0.9, advanced=True)
    test_frac: float = param(0.15, "fraction of each class held out for the final test (CellLM and baseline "
                                   "are scored on it)", min=0, min_exclusive=True, max=0.9, advanced=True)
    seed: int = param(0, "split and training seed", min=0, advanced=True)
    max_len: int | None = param(None, "genes kept per cell (top expressed)", min=1, unit="genes", advanced=True,
                                metavar="L", none_label=f"the model's (else {FINETUNE_MAX_LEN})")
    max_cells: int | None = param(None, "stratified subsample of this many cells before splitting (quick runs)",
                                  min=2, unit="cells", advanced=True, metavar="N", none_label="all")
    baseline: Literal["celltypist", "l1_hvg"] = param(
        "celltypist", "the baseline scored on the same cells: celltypist (CellTypist's training recipe: scaled "
                      "genes, SGD-selected top genes per class, L2 logistic regression) or l1_hvg (L1 logistic "
                      "regression on highly variable genes)", advanced=True)
    baseline_genes: int = param(2000, "highly variable genes of the l1_hvg baseline", min=1, unit="genes",
                                advanced=True)
    class_weight: Literal["balanced", "none"] = param("balanced", "cross-entropy class weights (balanced: every "
                                                                  "class weighs the same)", advanced=True)
    head_dropout: float = param(0.1, "dropout before the classifier head", min=0, max=0.95, advanced=True)
    label_smoothing: float = param(0.0, "cross-entropy label smoothing (0: none)", min=0, max=0.5, advanced=True)
    pooling: Literal["auto", "cls", "mean"] = param(
        "auto", "cell embedding the classifier head reads: cls (the CLS token's output, what pretraining's "
                "contrastive objective shapes) or mean (the mean over the cell's gene tokens); auto: the pooling "
                "the starting model records (cls when it records none); stored with the model", advanced=True)
    layer_lr_decay: float = param(1.0, "layer-wise learning rates: the top encoder layer trains at lr, each layer "
                                       "below at this factor times the one above, the embeddings below the bottom "
                                       "layer (1: one lr for the whole encoder)", min=0, min_exclusive=True, max=1,
                                  advanced=True)
    readout: Literal["cls", "cls+linear"] = param(
        "cls+linear", "classifier readout: cls (a linear head on the pooled embedding) or cls+linear (that head's "
                      "logits plus a linear model over the data's genes scaled as CellTypist scales them; stored with "
                      "the model). Default cls+linear: over 5 splits it reached the baseline on the mouse plaque and "
                      "CRC sets where cls was 0.04-0.10 below (bench annotate)", advanced=True)
    linear_init: Literal["baseline", "zero"] = param(
        "baseline", "cls+linear: start the linear path from the fitted baseline's coefficients (and the pooled head "
                    "from zero, so training starts at the baseline) or from zero (trained jointly)", advanced=True)
    linear_l2: float = param(1.0, "cls+linear: L2 penalty of the linear path, as 1/C of a logistic regression "
                                  "(0.5 * linear_l2 * |W|^2 / training cells added to the loss; CellTypist's C=1)",
                             min=0, advanced=True)
    linear_lr: float | None = param(None, "cls+linear: learning rate of the linear path", min=0, min_exclusive=True,
                                    advanced=True, none_label="head_lr")
    grad_clip: float = param(1.0, "gradient-norm clipping (0: none)", min=0, advanced=True)
    live_cells: int = param(5000, "cells of the live map, embedded at every epoch end (all when fewer; 0: off; "
                                  "with --repeats: default 0)", min=0, unit="cells", advanced=True, metavar="N")
    batch_key: str | None = param(None, "batch column: the live map also reports batch mixing (iLISI, graph "
                                        "connectivity)", metavar="COL", group="data")
    threads: int | None = param(None, "CPU threads for torch", min=1, group="compute", advanced=True,
                                none_label="1 (small models: more threads cost more than they give)")

    def problem(self) -> str | None:
        if self.split_key is None and self.val_frac + self.test_frac >= 1:
            return (f"val_frac {self.val_frac:g} + test_frac {self.test_frac:g} leave no training cells; "
                    "keep their sum below 1")
        return None


def _check_fractions(value: tuple[str, ...]) -> str | None:
    try:
        bad = [v for v in value if not 0 < float(v) <= 1]
    except ValueError:
        return f"label fractions must be numbers in (0, 1], got {' '.join(value)!r}"
    return f"label fractions must be in (0, 1], got {', '.join(bad)}" if bad else None


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig(FinetuneConfig):
    """``app.engine.celllm.evaluate:evaluate_repeats``: fine-tuning repeated over seeded splits (seed, seed + 1,
    ...), with the baseline (and optionally CellLM from random weights) on the same cells; mean, SD and the
    paired difference with a 95 % interval."""

    JOB: ClassVar[str] = "celllm.evaluate"

    repeats: int = param(3, "seeded stratified splits (seeds SEED..SEED+K-1): mean, SD and the paired difference "
                            "CellLM minus baseline with a 95 % interval", min=1, max=100, metavar="K",
                         group="evaluation")
    scratch: bool = param(False, "also train the same architecture from random weights on the same splits (does "
                                 "pretraining help on these data?)", group="evaluation")
    label_fractions: tuple[str, ...] = param((), "label-efficiency curve: also train on these fractions of the "
                                                 "training labels (1 is always run)",
                                             suggestions=("0.01", "0.05", "0.1", "0.25", "0.5"), metavar="F",
                                             check=_check_fractions, group="evaluation")
    # redeclared, default 0: a live map embeds its cells at every epoch of every sub-run (repeats x methods x
    # fractions runs). A typed default, so the CLI and the window (whose dicts always carry every setting)
    # get it too; it was a "key absent from the dict" test that only notebook calls ever met
    live_cells: int = param(0, "cells of each sub-run's live map (0: off)", min=0, unit="cells", advanced=True,
                            metavar="N")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(JobConfig):
    """``app.engine.celllm.pretrain:pretrain``: masked expression + contrastive pretraining (divide and
    conquer). Under torchrun ``batch_size`` is the global contrastive batch."""

    JOB: ClassVar[str] = "celllm.pretrain"

    data: tuple[str, ...] = param(help="single-cell counts (h5ad, 10x folder/h5, loom, CSV/TSV); several paths "
                                       "or repeat", kind="paths", metavar="PATH", group="data")
    run_dir: str = param(help="run folder to create (or resume)", kind="path", flag="--out", metavar="RUN")
    resume: bool = param(False, "continue RUN from its last checkpoint")
    preset: str = param("tiny", "model size", choices=PRESETS, advanced=True)
    batch_size: int = param(64, "cells per contrastive batch (under torchrun: the global batch, split over the "
                                "ranks)", min=2, unit="cells", advanced=True, metavar="N")
    chunk_size: int | None = param(None, "cells per divide-and-conquer chunk", min=1, unit="cells",
                                   advanced=True, metavar="C", none_label="chosen from free memory")
    epochs: float = param(1.0, "passes over the data (fractions allowed, e.g. 0.5)", min=0, min_exclusive=True,
                          unit="epochs", advanced=True, metavar="E")
    lr: float | None = param(None, "peak learning rate", min=0, min_exclusive=True, advanced=True,
                             none_label=f"by preset ({_by_preset(PRETRAIN_LR_BY_PRESET)})")
    weight_decay: float = param(0.01, "AdamW weight decay", min=0, advanced=True)
    warmup_frac: float = param(0.05, "fraction of the steps with a linear learning-rate warm-up", min=0, max=1,
                               advanced=True)
    grad_clip: float = param(1.0, "gradient-norm clipping (0: none)", min=0, advanced=True)
    seed: int = param(0, "sampling, masking and initialisation seed", min=0, advanced=True)
    max_len: int | None = param(None, "genes kept per cell (top expressed)", min=1, unit="genes", advanced=True,
                                metavar="L", none_label="the preset's (tiny 512, small 1024, full: all)")
    supervised_key: str | None = param(None, "optional .obs column for the supervised CLS loss (e.g. tumour vs "
                                             "normal; _dataset: the input file)", metavar="COL", group="data")
    init: str | None = param(None, "start from this model (keeps its vocabulary)", kind="path",
                             metavar="RUN_OR_CKPT", none_label="a new model")
    mlm_prob: float = param(0.15, "fraction of expressed genes masked", min=0, min_exclusive=True, max=1,
                            advanced=True)
    temperature: float = param(0.05, "contrastive softmax temperature", min=0, min_exclusive=True,
                               advanced=True)
    view: Literal["dropout", "genes"] = param("dropout", "the two contrastive views of a cell: two dropout "
                                                         "passes over its tokens, or two random subsets of its "
                                                         "genes (harder)", advanced=True)
    view_keep: float = param(0.5, "view=genes: fraction of a cell's genes in each view", min=0,
                             min_exclusive=True, max=1, advanced=True)
    w_mlm: float = param(1.0, "weight of the masked-expression loss", min=0, advanced=True)
    w_contrastive: float = param(1.0, "weight of the contrastive loss", min=0, advanced=True)
    w_supervised: float = param(1.0, "weight of the supervised loss", min=0, advanced=True)
    dropout: float | None = param(None, "dropout (> 0: the contrastive views need it)", min=0, min_exclusive=True,
                                  max=0.95, advanced=True, none_label="the model's")
    min_genes: int = param(1, "cells expressing fewer vocabulary genes are dropped", min=1, unit="genes",
                           advanced=True)
    max_cells: int | None = param(None, "seeded subsample of this many cells per dataset (quick runs)", min=2,
                                  unit="cells", advanced=True, metavar="N", none_label="all")
    amp: Literal["auto", "off", "fp16", "bf16"] = param("auto", "mixed precision (auto: bf16 on a CUDA GPU that "
                                                                "supports it, else fp16)", advanced=True)
    pooling: Literal["cls", "mean"] = param("cls", "how a cell's embedding is pooled", advanced=True)
    redraw_every: int = param(0, "redraw the Performer projections every N steps (0: never)", min=0,
                              unit="steps", advanced=True)
    checkpoint_every: int = param(0, "extra checkpoint every N steps (0: only at epoch ends and on stop)", min=0,
                                  unit="steps", advanced=True)
    stream: Literal["auto", "on", "off"] = param("auto", "stream cells from backed .h5ad files block by block, "
                                                         "never loading X whole (auto: when the data would not "
                                                         "fit in memory); --no-stream = off", advanced=True)
    shuffle_buffer: int = param(8192, "streaming: cells held for shuffling", min=1, unit="cells", advanced=True,
                                metavar="N")
    block_cells: int = param(1024, "streaming: rows per contiguous disk read", min=1, unit="cells", advanced=True,
                             metavar="N")
    live_cells: int = param(5000, "cells of the live map (all when fewer; 0: off; in-memory data only)", min=0,
                            unit="cells", advanced=True, metavar="N")
    live_every: int = param(0, "steps between live-map refreshes (0: about 20 refreshes per run)", min=0,
                            unit="steps", advanced=True, metavar="K")
    label_key: str | None = param(None, "column that colours and scores the live map (not trained on)",
                                  metavar="COL", group="data")
    batch_key: str | None = param(None, "batch column (or _dataset = the input file): the live map reports "
                                        "batch mixing", metavar="COL", group="data")
    threads: int | None = param(None, "CPU threads for torch", min=1, group="compute", advanced=True,
                                none_label="1 (under torchrun on CPUs: the cores shared by the ranks)")


def _check_h5ad(value: str) -> str | None:
    return None if value.lower().endswith(".h5ad") else f"the output must be an .h5ad file, got {value!r}"


@dataclass(frozen=True, kw_only=True)
class EmbedConfig(JobConfig):
    """``app.engine.celllm.embed:embed``: cell embeddings (and labels, if fine-tuned) into an .h5ad."""

    JOB: ClassVar[str] = "celllm.embed"

    data: str = param(help="single-cell counts", kind="path", metavar="PATH", group="data")
    model: str | None = param(None, "run or model folder", kind="path", metavar="RUN",
                              none_label="the shipped pretrained tiny CellLM")
    out: str = param(help="output AnnData (.h5ad)", kind="path", metavar="OUT.h5ad", check=_check_h5ad)
    labels: str | None = param(None, "table joined by cell ID into .obs", kind="path", metavar="FILE",
                               group="data")
    batch_size: int = param(64, "cells per inference batch", min=1, unit="cells", advanced=True, metavar="N")
    max_len: int | None = param(None, "genes kept per cell (top expressed)", min=1, unit="genes", advanced=True,
                                metavar="L", none_label="the model's")
    threads: int | None = param(None, "CPU threads: batches of cells are tokenised and embedded one per thread",
                                min=1, group="compute", advanced=True,
                                none_label="the usable cores, at most 8 (use 1 on a busy machine)")


@dataclass(frozen=True, kw_only=True)
class AnnotateConfig(JobConfig):
    """``app.engine.celllm.annotate:annotate``: label a new dataset with a fine-tuned run (confidence,
    Unassigned, joint reference + query map, transfer scores beside the baseline)."""

    JOB: ClassVar[str] = "celllm.annotate"

    model: str = param(help="fine-tune run folder (or its model folder)", kind="path", metavar="RUN")
    data: str = param(help="single-cell counts to annotate", kind="path", metavar="QUERY", group="data")
    out: str = param(help="annotated query AnnData", kind="path", metavar="OUT.h5ad", check=_check_h5ad)
    min_confidence: float = param(0.5, "cells whose top probability is under this become Unassigned (0 assigns "
                                       "every cell)", min=0, max=1, advanced=True, metavar="P")
    labels: str | None = param(None, "the query's own labels table (by cell ID)", kind="path", metavar="FILE",
                               group="data")
    label_key: str | None = param(None, "the query's own label column (an .obs column or a --labels column): "
                                        "scored", metavar="COL", group="data", none_label="none (not scored)")
    gene_map: str | None = param(None, "two-column gene ID table (query ID, model gene name) for genes not "
                                       "matched directly", kind="path", metavar="FILE")
    min_gene_match: float = param(0.1, "refuse when fewer than this fraction of the query's genes are in the "
                                       "model", min=0, max=1, advanced=True, metavar="F")
    reference: str | None = param(None, "reference cells for the joint map and the baseline", kind="path",
                                  metavar="PATH", none_label="the run's own data")
    reference_labels: str | None = param(None, "labels table of --reference", kind="path", metavar="FILE")
    reference_label_key: str | None = param(None, "label column of --reference", metavar="COL",
                                            none_label="the run's label column")
    max_reference_cells: int = param(5000, "reference cells placed on the joint map (stratified subsample "
                                           "above)", min=1, unit="cells", advanced=True)
    map: Literal["umap", "pca"] = param("umap", "joint map layout", advanced=True)
    batch_size: int = param(64, "cells per inference batch", min=1, unit="cells", advanced=True, metavar="N")
    max_len: int | None = param(None, "genes kept per cell (top expressed)", min=1, unit="genes", advanced=True,
                                metavar="L", none_label="the length the model was fine-tuned with")
    seed: int = param(0, "subsampling and map seed", min=0, advanced=True)
    baseline_genes: int = param(2000, "highly variable genes the baseline uses", min=1, unit="genes",
                                advanced=True)
    threads: int | None = param(None, "CPU threads: batches of cells are embedded one per thread", min=1,
                                group="compute", advanced=True,
                                none_label="the usable cores, at most 8 (use 1 on a busy machine)")


__all__ = ["FINETUNE_LR_BY_PRESET", "FINETUNE_MAX_LEN", "FREEZE_MODES", "PRESETS", "PRETRAIN_LR_BY_PRESET",
           "AnnotateConfig", "EmbedConfig", "EvaluateConfig", "FinetuneConfig", "PretrainConfig"]
