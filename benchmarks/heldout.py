"""Images the bundled model never trained on, split once and for all (seeded, by name/lesion):

- ISIC 2018: the bundled model's 419 validation images; half (``calibration``) may fit the
  review queue's quality calibration, the other half (``benchmark``) only measures.
- HAM10000: one image per lesion (split by ``lesion_id`` from manifest.csv, so no lesion is on
  both sides); lesions are shuffled, the first ones go to ``calibration``, the next to ``benchmark``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from common import all_pairs, bundled_val_pairs  # noqa: E402

SEED = 12


def isic_split(data: str | Path) -> dict[str, list]:
    pairs = bundled_val_pairs(all_pairs(data)) or []
    order = np.random.default_rng(SEED).permutation(len(pairs))
    half = len(pairs) // 2
    return {"calibration": [pairs[i] for i in sorted(order[:half])],
            "benchmark": [pairs[i] for i in sorted(order[half:])]}


def ham_reserve(data: str | Path, start: int = 1300, stop: int = 1500) -> list:
    """Lesions of the held-out order that no benchmark measures on (compare_models.py measures
    on 300-1300) and bundled model v2 never trained on (benchmarks/gpu/pack_data.py keeps the
    first 1,500 out): extra calibration images for the review queue."""
    return ham_split(data, start, stop - start)["benchmark"]


def ham_split(data: str | Path, n_calibration: int, n_benchmark: int) -> dict[str, list]:
    data = Path(data)
    lesion = {r["id"]: r["lesion_id"] for r in csv.DictReader(open(data / "manifest.csv"))}
    by_lesion: dict[str, list] = {}
    for p in all_pairs(data):
        by_lesion.setdefault(lesion[p.name], []).append(p)
    keys = sorted(by_lesion)
    order = np.random.default_rng(SEED).permutation(len(keys))
    first = [by_lesion[keys[i]][0] for i in order]
    return {"calibration": sorted(first[:n_calibration], key=lambda p: p.name),
            "benchmark": sorted(first[n_calibration:n_calibration + n_benchmark],
                                key=lambda p: p.name)}
