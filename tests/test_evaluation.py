"""core.explain.evaluation: metrics against hand counts and a brute-force oracle; the seeded per-class choice."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.explain import evaluation as ev


def test_hand_computed_metrics():
    # class 0: 3 images, 2 right; class 1: 2 images, 1 right; class 2: 1 image, 1 right; class 3: none
    targets = [0, 0, 0, 1, 1, 2]
    preds = [0, 1, 0, 1, 2, 2]
    m = ev.compute_metrics(targets, preds, ["a", "b", "c", "d"])
    assert (m.n, m.n_correct) == (6, 4), (m.n, m.n_correct)
    assert m.accuracy == pytest.approx(4 / 6), m.accuracy
    assert m.per_class_accuracy == (2 / 3, 0.5, 1.0, None), m.per_class_accuracy
    assert m.per_class_count == (3, 2, 1, 0), m.per_class_count
    assert m.confusion_counts == ((2, 1, 0, 0), (0, 1, 1, 0), (0, 0, 1, 0), (0, 0, 0, 0)), m.confusion_counts
    assert m.confusion_normalised[0] == pytest.approx((2 / 3, 1 / 3, 0, 0)), m.confusion_normalised[0]
    assert m.confusion_normalised[3] == (0.0, 0.0, 0.0, 0.0), "an empty class keeps a zero row"
    d = m.to_dict()
    assert d["per_class"]["d"] == {"accuracy": None, "n": 0}, d["per_class"]
    assert json.loads(json.dumps(d)) == d, "to_dict must be plain JSON"


@given(data=st.data(), num_classes=st.integers(1, 6))
def test_confusion_matrix_matches_brute_force(data, num_classes):
    n = data.draw(st.integers(1, 40))
    targets = data.draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    preds = data.draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
    counts = ev.confusion_matrix(targets, preds, num_classes)
    brute = [[sum(1 for t, p in zip(targets, preds) if (t, p) == (i, j)) for j in range(num_classes)]
             for i in range(num_classes)]
    assert counts.tolist() == brute, f"confusion {counts.tolist()} != brute force {brute}"
    assert ev.accuracy(targets, preds) == pytest.approx(sum(t == p for t, p in zip(targets, preds)) / n)
    rows = ev.normalise_rows(counts)
    for i in range(num_classes):
        expected = 1.0 if sum(brute[i]) else 0.0
        assert float(rows[i].sum()) == pytest.approx(expected), f"row {i} sums to {float(rows[i].sum())}"


def test_metric_errors_name_the_problem():
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        ev.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        ev.accuracy([], [])
    with pytest.raises(ValueError, match=r"class index 3, outside \[0, 3\)"):
        ev.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        ev.accuracy([0.5], [0])
    with pytest.raises(ValueError, match="class_names is empty"):
        ev.compute_metrics([0], [0], [])


def test_select_per_class_is_seeded_random_and_exact():
    labels = [0] * 10 + [1] * 2 + [2] * 7
    sel = ev.select_per_class(labels, num_classes=4, k=3, seed=0)
    assert [len(ix) for ix in sel.indices] == [3, 2, 3, 0], sel.indices
    assert sel.shortfalls == {1: 2, 3: 0}, sel.shortfalls
    assert sel.available == (10, 2, 7, 0), sel.available
    for c, chosen in enumerate(sel.indices):
        assert all(labels[i] == c for i in chosen), f"class {c} got indices {chosen} of other classes"
        assert len(set(chosen)) == len(chosen), f"class {c} repeats an image: {chosen}"
    assert ev.select_per_class(labels, 4, 3, seed=0) == sel, "same seed must give the same choice"
    draws = {ev.select_per_class(labels, 4, 3, seed=s).indices[0] for s in range(20)}
    assert len(draws) > 5, f"seeds barely change the draw: {draws}"
    assert sel.flat()[:3] == [(0, i) for i in sel.indices[0]], sel.flat()
    with pytest.raises(ValueError, match="k \\(images per class\\) must be a positive int"):
        ev.select_per_class(labels, 4, k=0)


def test_predict_keeps_order_and_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    x = torch.randn(10, 4)
    y = torch.arange(10) % 3
    out = ev.predict(model, DataLoader(TensorDataset(x, y), batch_size=4))
    assert model.training, "predict must restore train mode"
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(out.targets, y), out.targets
    assert torch.equal(out.preds, logits.argmax(1)), (out.preds, logits.argmax(1))
    torch.testing.assert_close(out.confidences, torch.softmax(logits, 1).max(1).values)
    with pytest.raises(ValueError, match="unshuffled loader"):
        ev.predict(model, DataLoader(TensorDataset(x, y), shuffle=True))
