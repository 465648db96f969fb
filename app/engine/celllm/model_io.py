"""Saving and loading CellLM models, and importing a published OpenBioMed CellLM checkpoint.

A saved model is a folder:
    model.safetensors   weights (incl. the Performer projections) + header metadata {config, vocab, extra}
    config.json         the ``CellLMConfig`` and ``extra`` (readable by people and other tools)
    vocab.txt           the gene vocabulary, one gene per line, in embedding order
The safetensors file alone is self-contained (its header carries config and vocabulary too), so a single
checkpoint file can be loaded as well. Nothing is ever unpickled beyond ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from app.data.atomic import write_text_atomic
from app.data.errors import DataError
from app.engine.checkpoint import load_tensors, save_tensors
from app.models.celllm.config import CellLMConfig
from app.models.celllm.model import CellLM, cls_bin, pad_bin

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
FORMAT = "omicslab.celllm"
FORMAT_VERSION = 1
MODEL_PREFIX = "model."
"""Prefix of the model's tensors inside a training checkpoint (which also holds optimiser state)."""


def _config_dict(config: CellLMConfig | dict) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, CellLMConfig) else dict(config)


def model_metadata(config: CellLMConfig | dict, vocab: list[str], extra: dict | None = None) -> dict[str, Any]:
    """The header metadata every CellLM weights file carries."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": _config_dict(config),
            "vocab": [str(g) for g in vocab], "extra": dict(extra or {})}


def save_model(dir: str | Path, model: CellLM, config: CellLMConfig | dict, vocab: list[str],
               extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` (weights + metadata), ``config.json`` and ``vocab.txt`` into ``dir``
    (each atomically). Returns the folder."""
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(config)
    if len(vocab) != int(cfg["vocab_size"]):
        raise ValueError(f"vocabulary has {len(vocab)} genes but the config says {cfg['vocab_size']}")
    meta = model_metadata(cfg, vocab, extra)
    save_tensors(out / WEIGHTS_FILE, dict(model.state_dict()), meta)
    write_text_atomic(out / CONFIG_FILE, json.dumps({"config": cfg, "extra": meta["extra"],
                                                     "format": FORMAT, "format_version": FORMAT_VERSION}, indent=2))
    write_text_atomic(out / VOCAB_FILE, "\n".join(meta["vocab"]) + "\n")
    return out


def read_vocab(path: str | Path) -> list[str]:
    """A vocabulary text file: one gene per line (blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("vocabulary file not found", p, "Give a text file with one gene name per line.")
    genes = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    genes = [g for g in genes if g]
    if not genes:
        raise DataError("the vocabulary file is empty", p, "Give a text file with one gene name per line.")
    return genes


def _weights_path(path: Path) -> Path:
    """The weights file for a model folder, run folder or file."""
    if path.is_file():
        return path
    if not path.exists():
        raise DataError("model not found", path, "Pass a model folder, a run folder or a .safetensors file.")
    for cand in (path / WEIGHTS_FILE, path / "model" / WEIGHTS_FILE):
        if cand.is_file():
            return cand
    try:  # a run folder without a final model yet: its last checkpoint
        from app.engine.run_dir import RunDir

        last = RunDir.open(path).last_checkpoint()
        if last is not None:
            return Path(last)
    except Exception:
        pass
    raise DataError("no CellLM model in this folder", path,
                    f"Expected {WEIGHTS_FILE} (a model folder), model/{WEIGHTS_FILE} (a run folder) or a checkpoint.")


def load_model(dir_or_file: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[CellLM, CellLMConfig, list[str], dict]:
    """Load a saved model folder, a run folder (its ``model/``) or a weights/training-checkpoint file.

    Returns ``(model in eval mode on device, config, vocab, extra)``.
    """
    p = Path(dir_or_file)
    if p.suffix in (".pth", ".pt", ".ckpt"):
        raise DataError("this is a PyTorch pickle checkpoint, not an OmicsLab model", p,
                        "Convert a published CellLM .pth first, in Python: from app.engine.celllm.model_io import "
                        "import_openbiomed_to (see the README, section Models).")
    wpath = _weights_path(p)
    tensors, meta = load_tensors(wpath, device="cpu")
    cfg_d = meta.get("config")
    vocab = meta.get("vocab")
    folder = wpath.parent
    if cfg_d is None and (folder / CONFIG_FILE).is_file():
        cfg_d = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("config")
    if vocab is None and (folder / VOCAB_FILE).is_file():
        vocab = read_vocab(folder / VOCAB_FILE)
    if cfg_d is None or vocab is None:
        raise DataError("the weights file carries no CellLM configuration or vocabulary", wpath,
                        "Load a model saved by OmicsLab (save_model) or a pretraining checkpoint.")
    config = config_from_file(cfg_d, wpath)
    if any(k.startswith(MODEL_PREFIX) for k in tensors):
        tensors = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    model = CellLM(config)
    load_state(model, tensors, wpath)
    extra = dict(meta.get("extra") or {})
    return model.to(device).eval(), config, list(vocab), extra


def config_from_file(cfg_d: Any, path: Path | None = None) -> CellLMConfig:
    """A model config read from a file, checked against ``LIMITS`` and against the memory that is free
    BEFORE any tensor is allocated; a DataError (with the memory the model would need) otherwise."""
    from app.engine.celllm.memory import free_memory_bytes

    if not isinstance(cfg_d, dict):
        raise DataError("the model's configuration is not a JSON object", path,
                        "Load a model saved by OmicsLab (its model/ folder or a checkpoint).")
    try:
        config = CellLMConfig.from_dict(cfg_d)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the model's configuration is not valid ({exc})", path,
                        "The file was changed or is not an OmicsLab CellLM model; load the model it came from.") \
            from exc
    need = config.weights_bytes()
    free = free_memory_bytes("cpu")
    if need > free:
        raise DataError(f"this model (dim {config.dim:,}, depth {config.depth:,}, {config.vocab_size:,} genes) would "
                        f"need about {need / 2**30:.1f} GiB of memory for its weights alone; {free / 2**30:.1f} GiB "
                        "is free", path, "Use a smaller model (e.g. the tiny or small preset), or a machine with "
                        "more memory.")
    return config


def load_state(model: CellLM, tensors: dict[str, torch.Tensor], path: Path | None = None) -> None:
    """Load ``tensors`` into ``model`` strictly, as a DataError naming the problem when they do not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if bad:
            parts.append("shape mismatch " + ", ".join(f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
                                                       for k in bad[:3]))
        raise DataError("the weights do not fit the model configuration: " + "; ".join(parts), path,
                        "The file may be from another model or version; re-save it with this OmicsLab.")
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)


# --------------------------------------------------------------------------------------------------
# OpenBioMed / performer_pytorch import
# --------------------------------------------------------------------------------------------------
_LAYER_KEY = re.compile(r"^performer\.net\.layers\.(\d+)\.([01])\.(.+)$")
_IGNORED = re.compile(r"^(performer\.calls_since_last_redraw|to_out\.(weight|bias))$")
_ATTN_PARTS = {"to_q.weight": "to_q.weight", "to_k.weight": "to_k.weight", "to_v.weight": "to_v.weight",
               "to_out.weight": "to_out.weight", "to_out.bias": "to_out.bias",
               "fast_attention.projection_matrix": "proj"}
_FF_PARTS = {"w1.weight": "w1.weight", "w1.bias": "w1.bias", "w2.weight": "w2.weight", "w2.bias": "w2.bias"}


def _refuse(path: Path, problem: str) -> DataError:
    return DataError(f"not a CellLM checkpoint in performer_pytorch layout: {problem}", path,
                     "Import the OpenBioMed CellLM .pth (a dict with 'model_state_dict' holding token_emb, "
                     "pos_emb.emb and performer.net.layers.* weights).")


def _map_layer_key(depth_idx: int, sub: int, rest: str) -> str | None:
    """performer_pytorch per-layer key -> our key (None if unknown). Wrapper ``fn.`` levels are stripped."""
    while rest.startswith("fn."):
        rest = rest[3:]
    base = f"encoder.layers.{depth_idx}."
    if rest in ("norm.weight", "norm.bias"):
        return base + ("attn_norm." if sub == 0 else "ff_norm.") + rest.split(".")[1]
    if sub == 0 and rest in _ATTN_PARTS:
        return base + "attn." + _ATTN_PARTS[rest]
    if sub == 1 and rest in _FF_PARTS:
        return base + "ff." + _FF_PARTS[rest]
    return None


def import_openbiomed(pth_path: str | Path, vocab: list[str] | str | Path, *, strict: bool = True,
                      dropout: float = 0.1) -> tuple[CellLM, CellLMConfig]:
    """Build a CellLM from a published OpenBioMed CellLM ``.pth`` (performer_pytorch key names).

    ``vocab``: the checkpoint's gene list (19,379 for the published model) as a list or a text file, in the
    order of its gene2vec table (``pos_emb.emb.weight``: genes, then CLS, then PAD). Sizes (dim, depth, heads,
    random features, feed-forward width, bins) are read from the tensor shapes. Keys other than the encoder's
    are refused unless ``strict=False`` (then ignored). The published model froze its gene table, so does this.
    """
    path = Path(pth_path)
    if not path.is_file():
        raise DataError("checkpoint file not found", path, "Give the path of the CellLM .pth file.")
    genes = read_vocab(vocab) if isinstance(vocab, (str, Path)) else [str(g) for g in vocab]
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"the file cannot be read safely as tensors ({type(exc).__name__}: {str(exc)[:200]})", path,
                        "Only plain PyTorch state dicts are imported (weights_only=True); re-save the "
                        "checkpoint as {'model_state_dict': model.state_dict()}.") from exc
    sd = obj.get("model_state_dict", obj.get("state_dict", obj)) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise _refuse(path, "no state dict of tensors found")
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    for key in ("token_emb.weight", "pos_emb.emb.weight", "norm.weight", "norm.bias"):
        if key not in sd:
            raise _refuse(path, f"key {key!r} missing")

    # sizes from shapes
    tok = sd["token_emb.weight"]
    pos = sd["pos_emb.emb.weight"]
    dim = int(tok.shape[1])
    n_bins = int(tok.shape[0]) - 2
    if n_bins < 1 or pos.shape[1] != dim:
        raise _refuse(path, f"token_emb {tuple(tok.shape)} and pos_emb {tuple(pos.shape)} do not agree")
    n_genes = int(pos.shape[0]) - 2
    if len(genes) != n_genes:
        raise DataError(f"the vocabulary has {len(genes)} genes but the checkpoint's gene table has {n_genes}",
                        path, "Pass the gene list the checkpoint was trained with (its gene2vec order).")
    layer_ids = sorted({int(m.group(1)) for k in sd if (m := _LAYER_KEY.match(k))})
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise _refuse(path, "no consecutive performer.net.layers.N.* entries")
    depth = len(layer_ids)

    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        m = _LAYER_KEY.match(k)
        if m:
            ours = _map_layer_key(int(m.group(1)), int(m.group(2)), m.group(3))
            if ours is None:
                unknown.append(k)
            else:
                mapped[ours] = v.float()
        elif k in ("token_emb.weight", "pos_emb.emb.weight"):
            continue
        elif k in ("norm.weight", "norm.bias"):
            mapped["encoder." + k] = v.float()
        elif not _IGNORED.match(k):
            unknown.append(k)
    if unknown and strict:
        raise _refuse(path, f"unrecognised keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                      "(a fine-tuned model's head? import with strict=False to skip them)")
    q = mapped.get("encoder.layers.0.attn.to_q.weight")
    proj = mapped.get("encoder.layers.0.attn.proj")
    w1 = mapped.get("encoder.layers.0.ff.w1.weight")
    if q is None or proj is None or w1 is None:
        raise _refuse(path, "layer 0 lacks to_q, projection_matrix or the feed-forward w1")
    dim_head = int(proj.shape[1])
    inner = int(q.shape[0])
    if inner % dim_head:
        raise _refuse(path, f"attention width {inner} is not a multiple of the head size {dim_head}")
    config = CellLMConfig(vocab_size=n_genes, dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head,
                          ff_mult=max(1, int(w1.shape[0]) // dim), n_bins=n_bins, dropout=dropout,
                          attention="performer", nb_features=int(proj.shape[0]), frozen_gene_emb=True,
                          preset="openbiomed")
    # embeddings: ours are PAD=0, CLS=1, gene i -> i+2; theirs: genes 0..G-1, CLS=G, PAD=G+1
    gene_w = torch.cat([pos[n_genes + 1:n_genes + 2], pos[n_genes:n_genes + 1], pos[:n_genes]]).float()
    mapped["gene_emb.weight"] = gene_w
    bin_w = tok.float().clone()  # rows: bins 0..n_bins-1, CLS, PAD: our cls_bin/pad_bin order
    assert cls_bin(n_bins) == n_bins and pad_bin(n_bins) == n_bins + 1
    mapped["bin_emb.weight"] = bin_w
    model = CellLM(config)
    out_w = sd.get("to_out.weight")
    if out_w is not None and out_w.shape == (n_bins + 2, dim) and "to_out.bias" in sd:
        mapped["mlm_head.weight"] = out_w[:n_bins].float()
        mapped["mlm_head.bias"] = sd["to_out.bias"][:n_bins].float()
    else:  # no bin-prediction head in the file: keep the fresh one
        mapped["mlm_head.weight"] = model.mlm_head.weight.detach().clone()
        mapped["mlm_head.bias"] = model.mlm_head.bias.detach().clone()
    load_state(model, mapped, path)
    return model.eval(), config


def import_openbiomed_to(pth_path: str | Path, vocab: list[str] | str | Path, out_dir: str | Path, *,
                         strict: bool = True) -> Path:
    """Import a published CellLM ``.pth`` and save it as an OmicsLab model folder (what a CLI/GUI "import"
    action calls). Returns the folder."""
    genes = read_vocab(vocab) if isinstance(vocab, (str, Path)) else [str(g) for g in vocab]
    model, config = import_openbiomed(pth_path, genes, strict=strict)
    extra = {"source": "openbiomed", "imported_from": Path(pth_path).name, "pooling": "cls"}
    return save_model(out_dir, model, config, genes, extra)
