"""The unpaired deal, per-class subsets and the balanced single-label rule (fed_uml.data.splits)."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fed_uml.data import splits as sp
from fed_uml.data.scenes import SceneRecord
from fed_uml.modality import ArrayDataset, ModalityData


def recs(n_per_class: int, classes: int = 3, prefix: str = "s") -> list[SceneRecord]:
    return [SceneRecord(f"{prefix}{c}_{i}", c, "train") for c in range(classes) for i in range(n_per_class)]


def test_disjoint_deal_is_disjoint_complete_and_stratified():
    pool = recs(10)
    out = sp.assign_disjoint({"a": pool, "b": list(pool)}, seed=0)
    a, b = {r.scene for r in out["a"]}, {r.scene for r in out["b"]}
    assert not a & b
    assert a | b == {r.scene for r in pool}
    for c in range(3):
        na = sum(r.label == c for r in out["a"])
        nb = sum(r.label == c for r in out["b"])
        assert abs(na - nb) <= 1


def test_disjoint_deal_respects_quotas_and_eligibility():
    pool = recs(10)
    only_a = [SceneRecord(f"x{i}", 0, "train") for i in range(3)]
    out = sp.assign_disjoint({"a": pool + only_a, "b": list(pool)}, seed=1, quotas={"a": 2, "b": None})
    assert max(Counter(r.label for r in out["a"]).values()) <= 2
    assert len(out["b"]) == 30 - 6 + sum(1 for r in out["a"] if r.scene.startswith("x"))  # b takes the rest
    assert not any(r.scene.startswith("x") for r in out["b"])


def test_disjoint_deal_keeps_groups_whole():
    pool = [SceneRecord(f"g{g}_p{p}", g % 2, "train", group=f"g{g}") for g in range(8) for p in range(3)]
    out = sp.assign_disjoint({"a": pool, "b": list(pool), "c": list(pool)}, seed=0)
    owner = {}
    for m, rs in out.items():
        for r in rs:
            assert owner.setdefault(r.group, m) == m
    assert sum(len(v) for v in out.values()) == len(pool)


def test_deal_depends_only_on_seed():
    pool = recs(6)
    one = sp.assign_disjoint({"a": pool, "b": pool}, seed=3)
    two = sp.assign_disjoint({"a": pool, "b": pool}, seed=3)
    other = sp.assign_disjoint({"a": pool, "b": pool}, seed=4)
    assert [r.scene for r in one["a"]] == [r.scene for r in two["a"]]
    assert {r.scene for r in one["a"]} != {r.scene for r in other["a"]}


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 12),
    classes=st.integers(1, 4),
    k=st.integers(1, 3),
    quota=st.one_of(st.none(), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_deal_properties(n, classes, k, quota, seed):
    pool = recs(n, classes)
    names = [f"m{i}" for i in range(k)]
    out = sp.assign_disjoint({m: pool for m in names}, seed, {m: quota for m in names})
    seen = [r.scene for m in names for r in out[m]]
    assert len(seen) == len(set(seen))
    for m in names:
        if quota is not None and out[m]:
            assert max(Counter(r.label for r in out[m]).values()) <= quota
    if quota is None:
        assert len(seen) == len(pool)


def test_per_class_subset_and_undersampling():
    pool = recs(5, 2) + [SceneRecord("extra", 2, "train")]
    sub = sp.per_class_subset(pool, 2, 0)
    assert Counter(r.label for r in sub) == {0: 2, 1: 2, 2: 1}
    assert len(sp.per_class_subset(pool, None, 0)) == len(pool)
    bal = sp.undersample_balanced(pool, 0)
    assert Counter(r.label for r in bal) == {0: 1, 1: 1, 2: 1}


def test_single_label_rule_counts():
    pool = [
        SceneRecord("a", -1, "train", labels=(3,)),
        SceneRecord("b", -1, "train", labels=(3, 5)),
        SceneRecord("c", -1, "train", labels=()),
        SceneRecord("d", -1, "train", labels=(7,)),
    ]
    kept, rep = sp.single_label(pool)
    assert [(r.scene, r.label) for r in kept] == [("a", 3), ("d", 7)]
    assert rep == {"rule": "exactly_one", "patches": 4, "single_label": 2, "multi_label": 1, "no_label": 1}
    assert sp.retain_classes(kept + [SceneRecord("e", 3, "train")], 10, 2) == [3]
    assert [r.label for r in sp.relabel(kept, [7, 3])] == [1, 0]
    with pytest.raises(ValueError, match="balanced.rule"):
        sp.single_label(pool, "dominant")


def test_write_class_counts(tmp_path):
    ds = ArrayDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    counts = {"train": {"x": 1, "y": 1}, "test": {"x": 1, "y": 1}}
    d = ModalityData("s1", ds, ds, ("x", "y"), info={"class_counts": counts})
    js = json.loads(sp.write_class_counts({"s1": d}, tmp_path / "c.json").read_text())
    assert js["s1"]["class_counts"]["train"] == {"x": 1, "y": 1}
    rows = list(csv.reader(open(sp.write_class_counts({"s1": d}, tmp_path / "c.csv"))))
    assert rows[0] == ["modality", "split", "class", "count"] and ["s1", "test", "y", "1"] in rows
