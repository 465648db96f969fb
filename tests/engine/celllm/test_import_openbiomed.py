"""Import of a published CellLM checkpoint (OpenBioMed .pth, performer_pytorch key names), tiny dims."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import torch
import torch.nn.functional as F

from app.data.errors import DataError
from app.engine.celllm.model_io import import_openbiomed, load_model, save_model
from app.engine.celllm.tokenize import collate

torch.set_num_threads(1)
G, DIM, DEPTH, HEADS, DH, NBF, FF = 12, 16, 2, 2, 8, 24, 4


def published_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes as PerformerLM_CellLM (OpenBioMed) saves them: 8 expression tokens (bins 0-5, CLS,
    PAD), a gene2vec table of genes + CLS + PAD, no q/k/v bias, FeedForward inside Chunk."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, s: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    sd = {"token_emb.weight": r(8, DIM), "pos_emb.emb.weight": torch.cat([r(G, DIM), torch.ones(1, DIM),
                                                                          torch.zeros(1, DIM)])}
    for i in range(DEPTH):
        p = f"performer.net.layers.{i}."
        sd.update({
            p + "0.norm.weight": 1 + r(DIM, s=0.1), p + "0.norm.bias": r(DIM, s=0.1),
            p + "0.fn.fast_attention.projection_matrix": r(NBF, DH, s=1.0),
            p + "0.fn.to_q.weight": r(HEADS * DH, DIM), p + "0.fn.to_k.weight": r(HEADS * DH, DIM),
            p + "0.fn.to_v.weight": r(HEADS * DH, DIM), p + "0.fn.to_out.weight": r(DIM, HEADS * DH),
            p + "0.fn.to_out.bias": r(DIM, s=0.1),
            p + "1.norm.weight": 1 + r(DIM, s=0.1), p + "1.norm.bias": r(DIM, s=0.1),
            p + "1.fn.fn.w1.weight": r(DIM * FF, DIM), p + "1.fn.fn.w1.bias": r(DIM * FF, s=0.1),
            p + "1.fn.fn.w2.weight": r(DIM, DIM * FF), p + "1.fn.fn.w2.bias": r(DIM, s=0.1),
        })
    sd.update({"performer.calls_since_last_redraw": torch.tensor(0), "norm.weight": 1 + r(DIM, s=0.1),
               "norm.bias": r(DIM, s=0.1), "to_out.weight": r(8, DIM), "to_out.bias": r(8)})
    return sd


def reference_forward(sd: dict[str, torch.Tensor], genes: list[int], bins: list[int]) -> torch.Tensor:
    """The published encoder's computation for ONE unpadded cell (CLS first), written out from
    performer_pytorch: token_emb[bin] + pos_emb[gene]; pre-LN softmax-kernel attention; pre-LN GELU FF."""
    exp = torch.tensor([6, *bins])
    pos = torch.tensor([G, *genes])
    x = sd["token_emb.weight"][exp] + sd["pos_emb.emb.weight"][pos]
    x = x[None]

    def kernel(data: torch.Tensor, proj: torch.Tensor, is_query: bool) -> torch.Tensor:
        dn = data.shape[-1] ** -0.25
        dash = torch.einsum("bhid,jd->bhij", dn * data, proj)
        diag = (data ** 2).sum(-1, keepdim=True) / 2 * dn ** 2
        stab = dash.amax(-1, keepdim=True) if is_query else dash.max()
        return proj.shape[0] ** -0.5 * (torch.exp(dash - diag - stab) + 1e-4)

    for i in range(DEPTH):
        p = f"performer.net.layers.{i}."
        h = F.layer_norm(x, (DIM,), sd[p + "0.norm.weight"], sd[p + "0.norm.bias"])
        q, k, v = (F.linear(h, sd[p + f"0.fn.to_{t}.weight"]).view(1, -1, HEADS, DH).transpose(1, 2) for t in "qkv")
        proj = sd[p + "0.fn.fast_attention.projection_matrix"]
        qf, kf = kernel(q, proj, True), kernel(k, proj, False)
        d_inv = 1.0 / torch.einsum("bhnd,bhd->bhn", qf, kf.sum(-2))
        out = torch.einsum("bhde,bhnd,bhn->bhne", torch.einsum("bhnd,bhne->bhde", kf, v), qf, d_inv)
        out = out.transpose(1, 2).reshape(1, -1, HEADS * DH)
        x = x + F.linear(out, sd[p + "0.fn.to_out.weight"], sd[p + "0.fn.to_out.bias"])
        h = F.layer_norm(x, (DIM,), sd[p + "1.norm.weight"], sd[p + "1.norm.bias"])
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "1.fn.fn.w1.weight"], sd[p + "1.fn.fn.w1.bias"])),
                         sd[p + "1.fn.fn.w2.weight"], sd[p + "1.fn.fn.w2.bias"])
    return F.layer_norm(x, (DIM,), sd["norm.weight"], sd["norm.bias"])[0]


def _write(tmp_path: Path, obj: object, name: str = "celllm.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


VOCAB = [f"GENE{i}" for i in range(G)]


def test_import_maps_every_weight_and_reproduces_the_published_forward(tmp_path: Path) -> None:
    sd = published_state_dict()
    model, cfg = import_openbiomed(_write(tmp_path, {"model_state_dict": sd, "epoch": 3}), VOCAB)
    assert (cfg.vocab_size, cfg.dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.nb_features, cfg.ff_mult,
            cfg.n_bins) == (G, DIM, DEPTH, HEADS, DH, NBF, FF, 6)
    assert cfg.frozen_gene_emb and not model.gene_emb.weight.requires_grad
    assert torch.equal(model.gene_emb.weight[2:], sd["pos_emb.emb.weight"][:G])  # gene i -> token i + 2
    assert torch.equal(model.gene_emb.weight[1], sd["pos_emb.emb.weight"][G])  # CLS
    assert torch.equal(model.layers[1].attn.proj, sd["performer.net.layers.1.0.fn.fast_attention.projection_matrix"])
    assert torch.equal(model.mlm_head.weight, sd["to_out.weight"][:6])
    genes, bins = [3, 5, 7, 11], [0, 2, 5, 1]
    ids = torch.tensor([[1, *(g + 2 for g in genes)]])
    with torch.no_grad():
        ours = model(ids, torch.tensor([[6, *bins]]), torch.ones_like(ids, dtype=torch.bool))[0]
    ref = reference_forward(sd, genes, bins)
    assert torch.allclose(ours, ref, atol=1e-4), float((ours - ref).abs().max())
    # and the imported model saves and reloads as an OmicsLab model with its vocabulary
    save_model(tmp_path / "m", model, cfg, VOCAB, {"source": "openbiomed"})
    m2, cfg2, vocab2, extra = load_model(tmp_path / "m")
    assert vocab2 == VOCAB and extra["source"] == "openbiomed" and cfg2 == cfg
    g, b, m = collate([(ids[0].numpy(), torch.tensor([6, *bins]).numpy())])
    assert torch.allclose(m2(g, b, m)[0], ours, atol=1e-6)


def test_import_accepts_bare_state_dict_and_dataparallel_prefix(tmp_path: Path) -> None:
    sd = {"module." + k: v for k, v in published_state_dict().items()}
    model, _ = import_openbiomed(_write(tmp_path, sd), VOCAB)
    assert model.config.depth == DEPTH


def test_import_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    sd = published_state_dict()
    with pytest.raises(DataError, match="vocabulary has 11 genes"):
        import_openbiomed(_write(tmp_path, {"model_state_dict": sd}), VOCAB[:-1])
    bad = dict(sd)
    bad["conv1.weight"] = torch.zeros(1, 1, 1, DIM)  # a fine-tuning head
    with pytest.raises(DataError, match="unrecognised keys"):
        import_openbiomed(_write(tmp_path, {"model_state_dict": bad}), VOCAB)
    model, _ = import_openbiomed(_write(tmp_path, {"model_state_dict": bad}), VOCAB, strict=False)
    assert model.config.dim == DIM
    missing = {k: v for k, v in sd.items() if k != "pos_emb.emb.weight"}
    with pytest.raises(DataError, match="pos_emb"):
        import_openbiomed(_write(tmp_path, {"model_state_dict": missing}), VOCAB)
    with pytest.raises(DataError, match="no state dict"):
        import_openbiomed(_write(tmp_path, {"model_state_dict": [1, 2]}), VOCAB)
    with pytest.raises(DataError, match="cannot be read safely"):
        import_openbiomed(_write(tmp_path, {"x": PurePosixPath("a")}, "pickled.pth"), VOCAB)  # pickle-only object
    with pytest.raises(DataError, match="not found"):
        import_openbiomed(tmp_path / "nope.pth", VOCAB)
    with pytest.raises(DataError, match="pickle checkpoint"):
        load_model(_write(tmp_path, {"model_state_dict": sd}))


def test_import_to_folder_and_load_errors(tmp_path: Path) -> None:
    from app.engine.celllm.model_io import import_openbiomed_to

    vocab_file = tmp_path / "genes.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    out = import_openbiomed_to(_write(tmp_path, {"model_state_dict": published_state_dict()}), vocab_file,
                               tmp_path / "imported")
    _model, cfg, vocab, extra = load_model(out)
    assert vocab == VOCAB and extra["source"] == "openbiomed" and cfg.preset == "openbiomed"
    with pytest.raises(DataError, match="model not found"):
        load_model(tmp_path / "missing")
    with pytest.raises(DataError, match="no CellLM model"):
        load_model(tmp_path)  # a folder without a model
    # weights that do not fit their config are refused with the offending keys
    from safetensors.torch import load_file, save_file

    w = load_file(str(out / "model.safetensors"))
    w["encoder.norm.weight"] = torch.zeros(3)
    save_file(w, str(out / "model.safetensors"))  # header metadata dropped: config.json / vocab.txt used
    with pytest.raises(DataError, match="shape mismatch"):
        load_model(out)
