"""core.data.imagefolder split helpers: stratified, disjoint, complete, seeded (property tests, no files needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.data import cap_per_class, stratified_split


def _samples(counts: list[int]) -> list[tuple[Path, int]]:
    return [(Path(f"c{label}/img_{i:04d}.jpg"), label) for label, n in enumerate(counts) for i in range(n)]


@given(counts=st.lists(st.integers(1, 60), min_size=1, max_size=8), fraction=st.floats(0.05, 0.95),
       seed=st.integers(0, 2**31))
def test_split_is_stratified_disjoint_and_complete(counts, fraction, seed):
    samples = _samples(counts)
    train, val = stratified_split(samples, fraction, seed)
    assert not set(train) & set(val), "train and validation overlap"
    assert sorted(train + val) == sorted(samples), "the split lost or invented samples"
    val_counts = Counter(label for _, label in val)
    for label, n in enumerate(counts):
        expected = 0 if n < 2 else min(max(1, round(n * fraction)), n - 1)
        assert val_counts.get(label, 0) == expected, f"class {label}: {n} images, fraction {fraction}"


@given(seed=st.integers(0, 1000))
def test_split_is_deterministic_for_a_seed_and_changes_with_it(seed):
    samples = _samples([50, 40, 30])
    first = stratified_split(samples, 0.2, seed)
    assert stratified_split(list(reversed(samples)), 0.2, seed) == first, "input order must not matter"
    assert stratified_split(samples, 0.2, seed + 1)[1] != first[1], "another seed gave the same validation set"


def test_split_of_one_class_does_not_depend_on_the_others():
    a = stratified_split(_samples([30, 5]), 0.2, 3)[1]
    b = stratified_split(_samples([30, 50, 7]), 0.2, 3)[1]
    assert [s for s in a if s[1] == 0] == [s for s in b if s[1] == 0]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(_samples([4]), fraction, 0)


def test_cap_per_class_is_seeded_and_capped():
    samples = _samples([20, 3, 8])
    capped = cap_per_class(samples, 5, seed=1)
    assert Counter(label for _, label in capped) == {0: 5, 1: 3, 2: 5}
    assert capped == cap_per_class(samples, 5, seed=1), "same seed, different subset"
    assert capped != cap_per_class(samples, 5, seed=2), "another seed gave the same subset"
    assert cap_per_class(samples, None, seed=0) == samples
    with pytest.raises(ValueError, match="max_per_class"):
        cap_per_class(samples, 0, seed=0)


def test_a_single_image_class_is_named_in_the_warning(caplog):
    samples = [(Path("root/train/Aves/a.jpg"), 0), (Path("root/train/Aves/b.jpg"), 0),
               (Path("root/train/Fungi/only.jpg"), 1)]
    caplog.set_level("WARNING")
    train, val = stratified_split(samples, 0.5, 0)
    assert (Path("root/train/Fungi/only.jpg"), 1) in train and len(val) == 1
    text = caplog.text
    assert "'Fungi'" in text and "only.jpg" in text and "Aves" not in text, text
