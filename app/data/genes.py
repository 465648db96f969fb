"""Gene identifiers: what kind they are, and mapping a dataset's genes onto a model's vocabulary.

The rules of ``harmonise_genes``, in the order they are tried for each data gene (first hit wins):

1. ``exact``       the name is in the vocabulary as written;
2. ``whitespace``  after stripping surrounding whitespace (``" CD3E "`` -> ``CD3E``);
3. ``version``     after dropping an Ensembl version suffix on either side (``ENSG00000111640.14`` ->
                   ``ENSG00000111640``);
4. ``case``        ignoring upper/lower case (``Cd3e`` -> ``CD3E``); when several vocabulary entries differ
                   only in case the first one is used and the gene is listed in ``GeneMatch.ambiguous``;
5. ``map``         through an optional ID table (e.g. Ensembl ID -> symbol), then rules 1-4 on the result;
6. ``table``       through the shipped Ensembl ID <-> symbol tables (human, mouse) and, when the data and the
                   vocabulary are of different species, the one-to-one human <-> mouse orthologues
                   (``app.data.gene_tables``), then rules 1-4 on the result.

Each vocabulary entry is used at most once: when two data genes land on the same entry, the one with the
better rule (then the earlier column) keeps it and the other is reported in ``GeneMatch.collisions``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.data.errors import DataError

HOW_ORDER = ("exact", "whitespace", "version", "case", "map", "table")

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$", re.IGNORECASE)
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*[GTP]\d{6,})\.\d+$", re.IGNORECASE)
_BARCODE = re.compile(r"[ACGTN]{8,}")
_HAS_LETTER = re.compile(r"[A-Za-z]")


def strip_version(name: str) -> str:
    """``ENSG00000111640.14`` -> ``ENSG00000111640``; anything else unchanged."""
    m = _ENSEMBL_VERSION.match(name)
    return m.group(1) if m else name


def detect_id_type(names: Iterable[str]) -> str:
    """What the gene names are: "ensembl_versioned", "ensembl", "human_symbol", "mouse_symbol" or "unknown".

    Ensembl IDs need half the names to match ``ENS...G#########``. Symbols: human symbols are upper case
    (``CD3E``, ``RP11-34P13.3``), mouse symbols are capitalised (``Cd3e``, ``Xkr4``); the majority among
    names with letters decides, if it covers at least 60 % of them.
    """
    names = [str(n).strip() for n in names]
    if not names:
        return "unknown"
    n = len(names)
    ens = [x for x in names if _ENSEMBL.match(x)]
    if len(ens) >= 0.5 * n:
        versioned = sum(1 for x in ens if "." in x)
        return "ensembl_versioned" if versioned >= 0.5 * len(ens) else "ensembl"
    upper = mouse = lettered = 0
    for x in names:
        letters = "".join(ch for ch in x if ch.isalpha())
        if not letters:
            continue
        lettered += 1
        if letters.isupper():
            upper += 1
        elif letters[0].isupper() and letters[1:].islower():
            mouse += 1
        elif x.startswith("mt-"):
            mouse += 1  # mouse mitochondrial genes: mt-Co1
    if lettered == 0 or lettered < 0.5 * n:
        return "unknown"
    if upper >= 0.6 * lettered:
        return "human_symbol"
    if mouse >= 0.6 * lettered:
        return "mouse_symbol"
    return "unknown"


def gene_likeness(names: Iterable[str]) -> float:
    """A score in [0, 1]: how much a list of names looks like gene IDs rather than cell IDs.

    Cell IDs are usually a shared pattern plus a number or a barcode (``CELL_000001``, ``tma_mfd_1808``,
    ``AAACCTGAGCATCATC-1``, ``1``..``7480``), so removing digits and nucleotide runs leaves few distinct
    "skeletons"; gene symbols keep many (``Xkr4`` -> ``xkr``, ``Sox17`` -> ``sox``). Ensembl IDs score 1.
    """
    names = [str(n).strip() for n in names]
    if not names:
        return 0.0
    n = len(names)
    if sum(1 for x in names if _ENSEMBL.match(x)) >= 0.5 * n:
        return 1.0
    if sum(1 for x in names if _BARCODE.search(x)) >= 0.5 * n:
        return 0.0
    skeletons = {re.sub(r"[\d\W_]+", "", _BARCODE.sub("", x)).lower() for x in names}
    skeletons.discard("")
    return min(1.0, len(skeletons) / n)


@dataclass
class GeneMatch:
    """Result of ``harmonise_genes``.

    Attributes:
        data_to_vocab: int64 array, one entry per data gene: its vocabulary index, or -1 when unmatched.
        match_rate: fraction of the DATA genes matched (0..1).
        n_matched: number of data genes matched.
        unmatched: data genes (as given) with no vocabulary entry.
        vocab_coverage: fraction of the vocabulary entries found in the data.
        how: rule -> number of genes matched by it (keys of ``HOW_ORDER``, all present).
        ambiguous: data gene -> vocabulary entries it matched ignoring case (the first was used).
        collisions: data gene -> the earlier data gene that already took its vocabulary entry.
        id_type_data / id_type_vocab: ``detect_id_type`` of each side (for the advice in ``to_text``).
    """

    data_to_vocab: np.ndarray
    match_rate: float
    n_matched: int
    unmatched: list[str]
    vocab_coverage: float
    how: dict[str, int]
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    collisions: dict[str, str] = field(default_factory=dict)
    id_type_data: str = "unknown"
    id_type_vocab: str = "unknown"

    @property
    def n_data(self) -> int:
        return len(self.data_to_vocab)

    def to_dict(self) -> dict:
        """JSON-ready summary (unmatched genes capped at 50)."""
        return {
            "n_data_genes": self.n_data,
            "n_matched": self.n_matched,
            "match_rate": self.match_rate,
            "vocab_coverage": self.vocab_coverage,
            "how": dict(self.how),
            "n_unmatched": len(self.unmatched),
            "unmatched_examples": self.unmatched[:50],
            "ambiguous": {k: list(v) for k, v in list(self.ambiguous.items())[:50]},
            "collisions": dict(list(self.collisions.items())[:50]),
            "id_type_data": self.id_type_data,
            "id_type_vocab": self.id_type_vocab,
        }

    def to_text(self) -> str:
        """A few plain sentences: how many genes matched, by which rule, and what to do about the rest."""
        lines = [f"{self.n_matched:,} of {self.n_data:,} genes in the data ({self.match_rate:.1%}) were found "
                 f"in the model's gene list; they cover {self.vocab_coverage:.1%} of that list."]
        rules = ", ".join(f"{v:,} {k}" for k, v in self.how.items() if v)
        if rules:
            lines.append(f"Matched by: {rules}.")
        if self.how.get("table"):
            from app.data.gene_tables import SOURCE

            lines.append(f"{self.how['table']:,} genes were matched through other IDs of the same gene (Ensembl "
                         f"ID <-> symbol, or a one-to-one human <-> mouse orthologue) from the {SOURCE}.")
        if self.unmatched:
            ex = ", ".join(self.unmatched[:8])
            lines.append(f"{len(self.unmatched):,} genes were not found (e.g. {ex}); CellLM ignores them.")
        if self.ambiguous:
            ex = ", ".join(list(self.ambiguous)[:5])
            lines.append(f"{len(self.ambiguous)} genes matched several entries that differ only in case "
                         f"(e.g. {ex}); the first entry was used.")
        if self.collisions:
            ex = ", ".join(f"{k} (kept {v})" for k, v in list(self.collisions.items())[:5])
            lines.append(f"{len(self.collisions)} genes are duplicates of an earlier gene and were skipped: {ex}.")
        ens = ("ensembl", "ensembl_versioned")
        if self.match_rate < 0.5 and self.vocab_coverage >= 0.5:
            lines.append("The model's gene list is small and well covered: the data's other genes are simply not "
                         "used by this model (nothing to fix).")
        elif self.match_rate < 0.5 and (self.id_type_data in ens) != (self.id_type_vocab in ens):
            lines.append(f"What to do: the data uses {_ID_WORDS[self.id_type_data]} but the model uses "
                         f"{_ID_WORDS[self.id_type_vocab]}; supply a two-column ID table (Ensembl ID, symbol) "
                         "or use the gene-symbol column of your data as the gene names.")
        elif self.match_rate < 0.5:
            lines.append("What to do: check that the data and the model are from the same species and use "
                         "the same kind of gene names.")
        return "\n".join(lines)


_ID_WORDS = {
    "ensembl": "Ensembl gene IDs",
    "ensembl_versioned": "Ensembl gene IDs with version suffixes",
    "human_symbol": "human gene symbols",
    "mouse_symbol": "mouse gene symbols",
    "unknown": "gene names of an unrecognised kind",
}


def harmonise_genes(data_genes: list[str], vocab: list[str], *,
                    id_map: Mapping[str, str] | None = None, tables: bool = True) -> GeneMatch:
    """Map each data gene onto a vocabulary index (see the module docstring for the rules).

    Args:
        data_genes: the dataset's gene names, in column order (e.g. ``adata.var_names``).
        vocab: the model's gene list; index i is vocabulary gene i.
        id_map: optional ID table (e.g. Ensembl ID -> symbol, see ``read_gene_map``), used for genes the
            direct rules miss; keys are compared without version suffix and case.
    Returns:
        ``GeneMatch`` with ``data_to_vocab`` (-1 = unmatched), the match rate and the unmatched genes.
    """
    data = [str(g) for g in data_genes]
    vocab = [str(v) for v in vocab]
    exact: dict[str, int] = {}
    stripped: dict[str, int] = {}
    unversioned: dict[str, int] = {}
    folded: dict[str, list[int]] = {}
    for i, v in enumerate(vocab):
        exact.setdefault(v, i)
        s = v.strip()
        stripped.setdefault(s, i)
        unversioned.setdefault(strip_version(s).upper(), i)
        folded.setdefault(s.upper(), []).append(i)
    idmap_norm = ({strip_version(str(k).strip()).upper(): str(v).strip() for k, v in id_map.items()}
                  if id_map else {})

    def direct(name: str) -> tuple[int, str, list[str]]:
        if name in exact:
            return exact[name], "exact", []
        s = name.strip()
        if s in stripped:
            return stripped[s], "whitespace", []
        key = strip_version(s).upper()
        if (s != strip_version(s) or _ENSEMBL.match(s)) and key in unversioned:
            return unversioned[key], "version", []
        cands = folded.get(s.upper(), [])
        if cands:
            return cands[0], "case", [vocab[c] for c in cands] if len(cands) > 1 else []
        return -1, "", []

    hits: list[tuple[int, str, list[str]]] = []
    for name in data:
        idx, rule, amb = direct(name)
        if idx < 0 and idmap_norm:
            target = idmap_norm.get(strip_version(name.strip()).upper())
            if target:
                idx, _, amb = direct(target)
                rule = "map" if idx >= 0 else ""
        hits.append((idx, rule, amb))

    missed = [j for j, h in enumerate(hits) if h[0] < 0]
    gene_tables = None
    if tables and missed:
        from app.data.gene_tables import alternatives, load_gene_tables, species_of

        gene_tables = load_gene_tables()
    if gene_tables is not None:
        sp_data, sp_vocab = species_of(data[:5000]), species_of(vocab[:5000])
        cross = (f"{sp_data}->{sp_vocab}" if "unknown" not in (sp_data, sp_vocab) and sp_data != sp_vocab
                 else None)
        for j in missed:
            for alt in alternatives(data[j], gene_tables, cross):
                idx, _, amb = direct(alt)
                if idx >= 0:
                    hits[j] = (idx, "table", amb)
                    break

    # Each vocabulary entry goes to one data gene: better rule first, then earlier column.
    rank = {r: k for k, r in enumerate(HOW_ORDER)}
    order = sorted((j for j, h in enumerate(hits) if h[0] >= 0), key=lambda j: (rank[hits[j][1]], j))
    out = np.full(len(data), -1, dtype=np.int64)
    owner: dict[int, int] = {}
    how = dict.fromkeys(HOW_ORDER, 0)
    ambiguous: dict[str, list[str]] = {}
    collisions: dict[str, str] = {}
    collided: set[int] = set()
    for j in order:
        idx, rule, amb = hits[j]
        if idx in owner:
            collisions[data[j]] = data[owner[idx]]
            collided.add(j)
            continue
        owner[idx] = j
        out[j] = idx
        how[rule] += 1
        if amb:
            ambiguous[data[j]] = amb
    n_matched = int((out >= 0).sum())
    n_vocab_unique = len(set(vocab)) or 1
    return GeneMatch(
        data_to_vocab=out,
        match_rate=n_matched / len(data) if data else 0.0,
        n_matched=n_matched,
        unmatched=[data[j] for j in np.flatnonzero(out < 0) if j not in collided],  # duplicates: in collisions
        vocab_coverage=min(1.0, n_matched / n_vocab_unique) if vocab else 0.0,
        how=how,
        ambiguous=ambiguous,
        collisions=collisions,
        id_type_data=detect_id_type(data[:5000]),
        id_type_vocab=detect_id_type(vocab[:5000]),
    )


def read_gene_map(path: str | Path) -> dict[str, str]:
    """Read a two-column ID table (CSV/TSV, header optional): first column -> second column.

    Typical use: Ensembl gene ID -> gene symbol, to match Ensembl-keyed data to a symbol vocabulary.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError("the gene ID table does not exist", path, "Check the path.")
    try:
        df = pd.read_csv(path, sep=None, engine="python", header=None, dtype=str, usecols=[0, 1])
    except Exception as exc:  # pandas raises many types for malformed text
        raise DataError(f"could not read the gene ID table ({exc})", path,
                        "Give a CSV or TSV with two columns: the data's gene ID and the model's gene name.") from exc
    df = df.dropna()
    return dict(zip(df[0].str.strip(), df[1].str.strip(), strict=False))
