"""Seeded, recorded sampling of rows from a source.

Each source draws from its own generator seeded by `(seed, crc32(source name))`, so changing one
source's count (or adding a source) does not change which rows another source contributes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sample:
    """The outcome of drawing `requested` rows out of `available`.

    `indices` are sorted upstream row positions (file order is kept, so a sample reads like the file).
    `shortfall` is how many rows were asked for but did not exist (then every row is taken).
    """

    indices: np.ndarray
    requested: int | None
    available: int
    seed: int | None

    @property
    def taken(self) -> int:
        return len(self.indices)

    @property
    def shortfall(self) -> int:
        return 0 if self.requested is None else max(self.requested - self.available, 0)


def source_seed(seed: int, source: str) -> list[int]:
    """The per-source entropy passed to `numpy.random.default_rng`."""
    return [int(seed), zlib.crc32(source.encode("utf-8"))]


def check_count(requested: Any, source: str) -> None:
    """Refuse, in one line, a count that is not None or a whole number >= 0: `--set count=1e6` reaches here as the
    string "1e6", `count=3.0` as a float, and numpy's draw failed on them with a traceback, after the source was
    read."""
    if requested is None:
        return
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)):
        raise ValueError(f"{source}: count must be a whole number >= 0 or null (all rows), got {requested!r}")
    if requested < 0:
        raise ValueError(f"{source}: count must be >= 0 or None, got {requested}")


def sample_indices(available: int, requested: int | None, *, seed: int, source: str) -> Sample:
    """Draw `requested` distinct row indices out of `available` (all of them when `requested` is None
    or not smaller than `available`; then no randomness is involved and `seed` is recorded as None)."""
    check_count(requested, source)
    if requested is None or requested >= available:
        return Sample(np.arange(available), requested, available, None)
    rng = np.random.default_rng(source_seed(seed, source))
    picked = np.sort(rng.choice(available, size=requested, replace=False))
    return Sample(picked, requested, available, seed)
