"""Seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.sampling import sample_indices


def test_same_seed_same_rows_other_seed_other_rows():
    a = sample_indices(1000, 50, seed=1, source="alpaca")
    b = sample_indices(1000, 50, seed=1, source="alpaca")
    c = sample_indices(1000, 50, seed=2, source="alpaca")
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert a.taken == 50 and a.seed == 1 and a.shortfall == 0
    assert list(a.indices) == sorted(set(a.indices.tolist()))  # distinct, file order
    assert a.indices.min() >= 0 and a.indices.max() < 1000


def test_sources_draw_independently():
    # Same seed, different source names: different draws (so one source's count never shifts another's rows).
    assert not np.array_equal(sample_indices(1000, 50, seed=1, source="alpaca").indices,
                              sample_indices(1000, 50, seed=1, source="dolly").indices)


def test_shortfall_takes_everything_and_records_it():
    s = sample_indices(3, 5, seed=0, source="webqa")
    assert s.indices.tolist() == [0, 1, 2]
    assert (s.requested, s.available, s.taken, s.shortfall, s.seed) == (5, 3, 3, 2, None)


def test_none_means_all_and_zero_means_none():
    assert sample_indices(4, None, seed=0, source="x").indices.tolist() == [0, 1, 2, 3]
    assert sample_indices(4, 0, seed=0, source="x").taken == 0
    with pytest.raises(ValueError, match="count must be >= 0"):
        sample_indices(4, -1, seed=0, source="x")
