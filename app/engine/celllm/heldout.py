"""Which cells of a benchmark dataset pretraining may see: the held-out rule shared by the pretraining data
preparation (``resources/models/prepare_pretrain_data.py``) and ``bench annotate``.

A cell is *held out* when the CRC-32 of its cell ID is even. Pretraining never reads held-out cells of a
dataset that is reported on; ``bench annotate`` draws its test cells only from held-out cells. The rule
depends on the cell ID alone (no labels, no seed), so anyone can recompute it from the files.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np


def held_out(cell_ids: Iterable[object]) -> np.ndarray:
    """Boolean mask, True for cells pretraining must not see (CRC-32 of the stripped ID is even)."""
    return np.array([zlib.crc32(str(c).strip().encode("utf-8")) % 2 == 0 for c in cell_ids], dtype=bool)
