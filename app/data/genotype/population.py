"""A simulated breeding population with a polygenic trait whose causal markers are known.

Founders are drawn per subpopulation (allele frequencies diverged from a common ancestral frequency,
Balding-Nichols, F_ST ~ 0.1); each family is a biparental cross of two founders of one subpopulation,
advanced by single-seed descent (meioses with Poisson crossovers along the chromosomes, 1 cM per Mb) to
F6-like recombinant inbred lines, so markers are in linkage disequilibrium within families and allele
frequencies differ between subpopulations. A trait is the sum of ``n_causal`` marker effects plus noise
scaled to the requested heritability. Everything follows from ``seed``.

Regenerate the demo files: ``python -m app.data.genotype.simulate --out app/resources/demo/genotype``
(the entry point lives in ``simulate.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.data.atomic import write_text_atomic
from app.data.errors import DataError
from app.data.genotype.types import MISSING, GenotypeMatrix

DEFAULT_SEED = 20261122
_CHROM_MB = (120, 100, 90, 80, 70, 110, 95, 85, 75, 65)  # chromosome lengths (Mb) cycled as needed
_BASES = np.array(["A", "C", "G", "T"])


def _gamete(
    h0: np.ndarray,
    h1: np.ndarray,
    slices: list[slice],
    morgans: list[np.ndarray],
    lengths: list[float],
    rng: np.random.Generator,
) -> np.ndarray:
    """One recombinant gamete from haplotypes ``h0``/``h1`` (Poisson crossovers per chromosome)."""
    out = np.empty_like(h0)
    for s, pos_m, length in zip(slices, morgans, lengths, strict=True):
        k = rng.poisson(length)
        pts = np.sort(rng.uniform(0.0, length, k))
        strand = (rng.integers(0, 2) + np.searchsorted(pts, pos_m)) % 2
        out[s] = np.where(strand == 1, h1[s], h0[s])
    return out


def simulate_population(
    n_lines: int = 400,
    n_markers: int = 2000,
    n_causal: int = 50,
    h2: float = 0.5,
    seed: int = DEFAULT_SEED,
    *,
    n_chrom: int = 5,
    n_subpops: int = 3,
    founders_per_subpop: int = 6,
    n_families: int = 20,
    selfing_generations: int = 5,
    missing_rate: float = 0.01,
) -> tuple[GenotypeMatrix, pd.DataFrame, pd.DataFrame]:
    """Simulate recombinant inbred families and a polygenic trait with known causal markers.

    Args:
        n_lines: number of lines (split evenly over families).
        n_markers: markers, spread over ``n_chrom`` chromosomes at sorted random positions.
        n_causal: causal markers (drawn among markers with minor-allele frequency >= 0.05).
        h2: narrow-sense heritability of the trait in this sample (0 < h2 <= 1).
        seed: the only source of randomness.
        n_chrom, n_subpops, founders_per_subpop, n_families, selfing_generations: population design.
        missing_rate: fraction of calls set missing at random (1 % of the non-causal markers get 20-40 %
            missing so the call-rate filter has something to remove); the trait uses the complete genotypes.

    Returns:
        (genotypes, pheno, causal):
        genotypes: GenotypeMatrix (calls 0/1/2 = copies of ``alt``, MISSING for missing calls);
        pheno: DataFrame indexed by line ID with ``trait``, ``family`` (for grouped CV), ``subpop`` and
        ``true_gv`` (the true genetic value);
        causal: DataFrame with ``id``, ``chrom``, ``pos``, ``effect`` (trait units per ``alt`` copy),
        ``index`` (column in the matrix), ``alt_freq``, ``var_share`` (share of genetic variance).
    """
    if not 0.0 < h2 <= 1.0:
        raise DataError(f"h2 must be in (0, 1], got {h2}")
    if n_lines < 2 * n_families or n_markers < n_chrom or n_causal > n_markers // 2:
        raise DataError(
            f"inconsistent design: n_lines={n_lines}, n_families={n_families}, n_markers={n_markers}, "
            f"n_causal={n_causal}",
            None,
            "use at least 2 lines per family and fewer causal markers than half the markers",
        )
    rng = np.random.default_rng(seed)

    # Marker map.
    per_chrom = [len(a) for a in np.array_split(np.arange(n_markers), n_chrom)]
    chrom, pos, slices, morgans, lengths = [], [], [], [], []
    start = 0
    for c, k in enumerate(per_chrom):
        mb = _CHROM_MB[c % len(_CHROM_MB)]
        p = np.sort(rng.choice(mb * 1_000_000, size=k, replace=False) + 1)
        chrom += [str(c + 1)] * k
        pos.append(p)
        slices.append(slice(start, start + k))
        morgans.append(p / 1e8)  # 1 cM per Mb
        lengths.append(mb / 100.0)
        start += k
    pos_all = np.concatenate(pos).astype(np.int64)
    ids = [f"chr{c}_{p}" for c, p in zip(chrom, pos_all, strict=True)]
    alleles = np.array([rng.choice(_BASES, size=2, replace=False) for _ in range(n_markers)])

    # Founders: inbred haplotypes per subpopulation (Balding-Nichols divergence from p_anc).
    p_anc = np.clip(rng.beta(1.2, 1.2, n_markers), 0.1, 0.9)  # array SNPs are ascertained polymorphic
    fst = 0.1
    a, b = p_anc * (1 - fst) / fst, (1 - p_anc) * (1 - fst) / fst
    founders = []
    for _ in range(n_subpops):
        p_sub = rng.beta(a, b)
        founders.append((rng.random((founders_per_subpop, n_markers)) < p_sub).astype(np.int8))

    # Families: biparental crosses within a subpopulation, advanced by single-seed descent.
    sizes = [len(x) for x in np.array_split(np.arange(n_lines), n_families)]
    haps = np.empty((n_lines, 2, n_markers), dtype=np.int8)
    sample_ids, fam_col, sub_col = [], [], []
    row = 0
    for f, size in enumerate(sizes):
        sp = f % n_subpops
        i, j = rng.choice(founders_per_subpop, size=2, replace=False)
        p1, p2 = founders[sp][i], founders[sp][j]
        for k in range(size):
            h0, h1 = p1.copy(), p2.copy()  # F1
            for _ in range(selfing_generations):
                h0, h1 = (
                    _gamete(h0, h1, slices, morgans, lengths, rng),
                    _gamete(h0, h1, slices, morgans, lengths, rng),
                )
            haps[row, 0], haps[row, 1] = h0, h1
            sample_ids.append(f"F{f + 1:02d}_{k + 1:03d}")
            fam_col.append(f"F{f + 1:02d}")
            sub_col.append(f"P{sp + 1}")
            row += 1
    x = haps.sum(axis=1).astype(np.int8)  # copies of allele "1" = alt

    # Trait: n_causal additive effects among common markers, noise for the requested h2.
    freq = x.mean(axis=0) / 2.0
    maf = np.minimum(freq, 1 - freq)
    pool = np.flatnonzero(maf >= 0.05)
    if len(pool) < n_causal:
        raise DataError(
            f"only {len(pool)} markers are common enough to be causal, {n_causal} asked",
            None,
            "simulate more markers or fewer causal ones",
        )
    causal_idx = np.sort(rng.choice(pool, size=n_causal, replace=False))
    effects = rng.normal(0.0, 1.0, n_causal)
    xc = x[:, causal_idx].astype(np.float64)
    g = (xc - xc.mean(axis=0)) @ effects
    var_g = float(g.var())
    noise = rng.normal(0.0, 1.0, n_lines)
    noise -= noise.mean()
    gc = g - g.mean()
    noise -= gc * (noise @ gc) / (gc @ gc)  # orthogonal to g: the sample heritability is exactly h2
    noise = noise / noise.std() * np.sqrt(var_g * (1 - h2) / h2) if h2 < 1 else noise * 0
    scale = 10.0 / np.sqrt(var_g / h2)  # phenotypic SD ~ 10 trait units
    true_gv = 100.0 + scale * g
    trait = true_gv + scale * noise
    effects_scaled = effects * scale
    contrib = (xc - xc.mean(axis=0)) * effects
    var_share = contrib.var(axis=0) / var_g

    # Missing calls (after the trait, which uses complete genotypes).
    calls = x.copy()
    calls[rng.random(calls.shape) < missing_rate] = MISSING
    n_bad = max(1, n_markers // 100)
    bad = rng.choice(np.setdiff1d(np.arange(n_markers), causal_idx), size=n_bad, replace=False)
    for jj in bad:
        calls[rng.random(n_lines) < rng.uniform(0.2, 0.4), jj] = MISSING

    markers = pd.DataFrame({"id": ids, "chrom": chrom, "pos": pos_all, "ref": alleles[:, 0], "alt": alleles[:, 1]})
    geno = GenotypeMatrix(
        calls=calls,
        samples=sample_ids,
        markers=markers,
        coding="dosage",
        source=f"simulated (seed={seed})",
        notes=[
            f"simulated: {n_families} RIL families from {n_subpops} subpopulations x {founders_per_subpop} "
            f"founders, {n_chrom} chromosomes, {n_causal} causal markers, h2={h2}, seed={seed}"
        ],
    )
    pheno = pd.DataFrame(
        {"trait": trait, "family": fam_col, "subpop": sub_col, "true_gv": true_gv},
        index=pd.Index(sample_ids, name="id"),
    )
    causal = pd.DataFrame(
        {
            "id": [ids[i] for i in causal_idx],
            "chrom": [chrom[i] for i in causal_idx],
            "pos": pos_all[causal_idx],
            "effect": effects_scaled,
            "index": causal_idx.astype(np.int64),
            "alt_freq": freq[causal_idx],
            "var_share": var_share,
        }
    )
    return geno, pheno, causal


DEMO_FILES = ("genotypes.csv", "marker_map.csv", "pheno.csv", "causal_markers.csv", "README.md")

_README = """# Simulated genotype demo (generated; do not edit by hand)

Regenerate with `python -m app.data.genotype.simulate --out app/resources/demo/genotype` (seed {seed}).

- `genotypes.csv`: {n} lines x {m} markers, numeric 0/1/2 = copies of the `alt` allele, `NA` = missing
  (~1 % of calls, and {n_bad} markers with 20-40 % missing for the call-rate filter). First column `id`.
- `marker_map.csv`: `id, chrom, pos, ref, alt` for every marker ({n_chrom} chromosomes, 1 cM per Mb);
  `read_genotypes` picks it up automatically.
- `pheno.csv`: `id, trait, family, subpop, true_gv`. `trait` = true genetic value + noise (h2 = {h2});
  `family` (20 RIL families) is the grouping column for grouped cross-validation; `true_gv` is the truth
  that predictions can be checked against.
- `causal_markers.csv`: the {n_causal} causal markers: `id, chrom, pos, effect` (trait units per `alt`
  copy), `index` (0-based column in the matrix), `alt_freq`, `var_share` (share of genetic variance).
  Marker-importance views should put their peaks at these markers.

Design: {n_sub} subpopulations with diverged allele frequencies (F_ST ~ 0.1), 6 inbred founders each;
each family is a biparental cross within a subpopulation advanced to F6 by single-seed descent with
Poisson crossovers, so markers are in LD within families and population structure exists.
"""


def write_demo(out: str | Path, seed: int = DEFAULT_SEED, **kwargs: object) -> dict[str, Path]:
    """Simulate (``simulate_population(seed=seed, **kwargs)``) and write the demo files atomically.

    Returns the written paths by name (see ``DEMO_FILES``). Output is byte-identical for the same
    arguments (fixed number formats).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    geno, pheno, causal = simulate_population(seed=seed, **kwargs)  # type: ignore[arg-type]
    codes = np.array(["0", "1", "2", "NA"])
    cls = np.where(geno.calls == MISSING, 3, geno.calls)
    header = "id," + ",".join(geno.markers["id"])
    rows = [f"{sid}," + ",".join(codes[r]) for sid, r in zip(geno.samples, cls, strict=True)]
    paths = {name: out / name for name in DEMO_FILES}
    write_text_atomic(paths["genotypes.csv"], header + "\n" + "\n".join(rows) + "\n")
    write_text_atomic(paths["marker_map.csv"], geno.markers.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["pheno.csv"], pheno.to_csv(float_format="%.4f", lineterminator="\n"))
    write_text_atomic(paths["causal_markers.csv"], causal.to_csv(index=False, float_format="%.6f", lineterminator="\n"))
    n_bad = max(1, geno.n_markers // 100)
    write_text_atomic(
        paths["README.md"],
        _README.format(
            seed=seed,
            n=geno.n_samples,
            m=geno.n_markers,
            n_bad=n_bad,
            n_chrom=geno.markers["chrom"].nunique(),
            h2=kwargs.get("h2", 0.5),
            n_causal=len(causal),
            n_sub=pheno["subpop"].nunique(),
        ),
    )
    return paths
