"""Entry point: ``python -m app.data.genotype.simulate --out app/resources/demo/genotype`` writes the demo files.

The simulation itself is in :mod:`app.data.genotype.population` (imported by the package, so that running
this module with ``-m`` does not import it twice).
"""

from __future__ import annotations

import argparse
import sys

from app.data.errors import DataError
from app.data.genotype.population import DEFAULT_SEED, write_demo


def main(argv: list[str] | None = None) -> int:
    """CLI: write the demo genotype files."""
    ap = argparse.ArgumentParser(
        prog="python -m app.data.genotype.simulate", description="Write the simulated genotype demo files."
    )
    ap.add_argument("--out", required=True, help="output folder (e.g. app/resources/demo/genotype)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--n-lines", type=int, default=400)
    ap.add_argument("--n-markers", type=int, default=2000)
    ap.add_argument("--n-causal", type=int, default=50)
    ap.add_argument("--h2", type=float, default=0.5)
    args = ap.parse_args(argv)
    try:
        paths = write_demo(
            args.out, seed=args.seed, n_lines=args.n_lines, n_markers=args.n_markers, n_causal=args.n_causal, h2=args.h2
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
