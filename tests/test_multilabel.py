"""Multi-label BigEarthNet (`dataset.task=multi_label`, the default for bigearthnet and bigearthnet_v2):
the metrics, the data (fixtures of both layouts and the shared real v1 sample), bad input, the
stratification, the loss, the compared methods' multi-label forms, federated reports and their
aggregation, results and tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fed_uml.data import load_dataset
from fed_uml.data.bigearthnet import CLASSES_19, LABEL_43_TO_19
from fed_uml.data.errors import DataError
from fed_uml.data.splits import rarest_label
from fed_uml.errors import SettingsError
from fed_uml.federated.partition import split_indices, strata
from fed_uml.federated.protocol import CalibrateReport, EvaluateReport, TrainReport
from fed_uml.methods.alignment import label_set_entropy
from fed_uml.methods.cdan import CDANObjective, entropy_weights, multilinear_map
from fed_uml.methods.mcc import mcc_loss, multi_label_mcc_loss
from fed_uml.methods.mdd import intra_class_distance
from fed_uml.metrics import (
    average_precision,
    decision_settings,
    f1_macro,
    map_macro,
    map_micro,
    multi_label_metrics,
    task_of,
    tune_thresholds,
)
from fed_uml.results import make_results, modality_result, read_results, write_json_atomic
from fed_uml.schema import DecisionSettings
from fed_uml.training.loop import task_loss
from tests.conftest import shared_data_root
from tests.fixtures.make_fixtures import dataset_config, make_bigearthnet_v1, make_bigearthnet_v2

SHARED = shared_data_root()
needs_data = pytest.mark.skipif(SHARED is None or not (SHARED / "bigearthnet_v1").is_dir(),
                                reason="the shared real data sample is not there (FED_UML_DATA or ../shared/data)")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("ben_ml")
    make_bigearthnet_v1(r)
    make_bigearthnet_v2(r)
    return r


# ------------------------------------------------------------------------------------ metrics


def test_average_precision_known_values():
    # scikit-learn's documented example of average_precision_score: 0.8333...
    ap = average_precision(torch.tensor([[0.1], [0.4], [0.35], [0.8]]), torch.tensor([[0], [0], [1], [1]]))
    assert ap[0].item() == pytest.approx(0.83333333, abs=1e-7)
    # tied scores are one threshold: P = 2/3 at R = 1 (counting them one by one would give 1 * 0.5 + 2/3 * 0.5)
    ap = average_precision(torch.tensor([[0.5], [0.5], [0.5], [0.1]]), torch.tensor([[1], [0], [1], [0]]))
    assert ap[0].item() == pytest.approx(2 / 3)
    # a column without a positive has no AP; the macro mean leaves it out
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0]])
    ap = average_precision(scores, targets)
    assert ap[:2].tolist() == [1.0, 1.0] and math.isnan(ap[2].item())
    assert map_macro(scores, targets) == 1.0
    # micro: the six decisions pooled; positives at ranks 1 and 2 of 6 -> AP 1
    assert map_micro(scores, targets) == 1.0
    assert map_micro(torch.tensor([[0.9, 0.8]]), torch.tensor([[0, 1]])) == pytest.approx(0.5)


def test_f1_macro_at_one_half():
    scores = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.7, 0.4], [0.8, 0.1, 0.2]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # class 0: TP 1, FP 1 -> 2/3; class 1: TP 1, FP 1, FN 1 -> 1/2; class 2: absent everywhere -> left out
    assert f1_macro(scores, targets) == pytest.approx((2 / 3 + 1 / 2) / 2)
    m = multi_label_metrics(torch.logit(scores), targets)
    assert set(m) == {"map_macro", "map_micro", "f1_macro"} and m["f1_macro"] == pytest.approx(7 / 12)


def test_tuned_thresholds_maximise_each_class_f1():
    scores = torch.tensor([[0.9, 0.2, 0.3], [0.8, 0.6, 0.1], [0.4, 0.55, 0.2], [0.3, 0.1, 0.7], [0.35, 0.6, 0.9]])
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    t = tune_thresholds(scores, targets, default=0.5)
    # class 0: positives at 0.9, 0.8, 0.3; the best cut keeps 0.9, 0.8 (F1 4/5), half-way down to 0.4
    assert t[0] == pytest.approx(0.6)
    # class 1: the tied scores 0.6 (one positive, one negative) are one decision (F1 1/2); the best keeps
    # them and 0.55 (F1 4/5), half-way down to 0.2
    assert t[1] == pytest.approx(0.375)
    assert t[2] == 0.5  # no positive: nothing to maximise, the default stays
    for c in (0, 1):  # no other threshold gives the class a higher F1
        def f1(th):
            pred, y = scores[:, c] >= th, targets[:, c].bool()
            return 2 * (pred & y).sum() / (pred.sum() + y.sum())
        assert all(f1(t[c]) >= f1(float(th)) for th in scores[:, c])


def test_decision_settings_are_checked():
    assert decision_settings({}) == DecisionSettings(0.5, "fixed")
    assert decision_settings({"decision": {"threshold": 0.3, "thresholds": "tuned"}}).threshold == 0.3
    for bad, setting in (({"threshold": 1.0}, "decision.threshold"), ({"threshold": "high"}, "decision.threshold"),
                         ({"thresholds": "best"}, "decision.thresholds"), ({"treshold": 0.5}, "decision.treshold")):
        with pytest.raises(SettingsError, match=setting):
            decision_settings({"decision": bad})


def test_task_of_targets_and_the_loss():
    assert task_of(torch.zeros(3, dtype=torch.long)) == "single_label"
    assert task_of(torch.zeros(3, 19, dtype=torch.long)) == "multi_label"
    # BCE with logits, averaged over samples and classes: log 2 at logit 0 whatever the target
    assert task_loss(torch.zeros(2, 4), torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])).item() == pytest.approx(math.log(2))
    assert task_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.log(2))


# ----------------------------------------------------------------------- stratification


def test_rarest_label_strata():
    assert rarest_label((0, 2), [5, 1, 3]) == 2 and rarest_label((0, 1), [2, 2, 1]) == 0  # tie: lower index
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 1, 0]])  # frequencies 2, 3, 1
    assert strata(labels).tolist() == [0, 0, 2, 1]
    with pytest.raises(ValueError, match="sample 1 has no label"):
        strata(np.array([[1, 0], [0, 0]]))


def test_dirichlet_partition_of_multi_hot_labels_is_stratified():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 5)) < 0.3).astype(int)
    labels[labels.sum(1) == 0, 0] = 1
    parts = [split_indices(labels, 3, p, "dirichlet", 0.5, seed=1) for p in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(60))
    # the same as partitioning the strata themselves
    for p in range(3):
        assert parts[p].tolist() == split_indices(strata(labels), 3, p, "dirichlet", 0.5, seed=1).tolist()


# ---------------------------------------------------------------------------- data: fixtures


def _v1_labels(names):
    return sorted({CLASSES_19.index(LABEL_43_TO_19[n]) for n in names if n in LABEL_43_TO_19})


def test_v1_fixture_multi_label_is_the_default(root):
    cfg = dataset_config("bigearthnet", root, image_size=16)
    assert cfg["task"] == "multi_label" and cfg["num_classes"] == 19 and cfg["train_splits"] == ["train", "val"]
    data = load_dataset(cfg)
    s1, s2 = data["s1"], data["s2"]
    assert s1.class_names == s2.class_names == CLASSES_19
    assert s1.train.labels.shape[1] == 19 and s1.info["task"] == "multi_label"
    # every train+val and test patch is used, each by one modality (16 train+val, 7 test pairs)
    assert len(s1.train) + len(s2.train) == 16 and len(s1.test) + len(s2.test) == 7
    for kind in ("train", "test"):
        assert not set(getattr(s1, kind).scene_ids) & set(getattr(s2, kind).scene_ids)
    # the targets are the patches' own 19-class labels
    meta = root / "bigearthnet_v1" / "BigEarthNet-v1.0"
    for d in (s1, s2):
        for scene, row in zip(d.train.scene_ids, d.train.labels):
            names = json.loads((meta / scene / f"{scene}_labels_metadata.json").read_text())["labels"]
            assert torch.nonzero(row).flatten().tolist() == _v1_labels(names)
    # the rare labels are spread over both modalities by the rarest-label deal
    counts = {m: d.info["class_counts"]["train"] for m, d in data.items()}
    assert counts["s1"]["Coniferous forest"] + counts["s2"]["Coniferous forest"] == 8
    assert counts["s1"]["Mixed forest"] + counts["s2"]["Mixed forest"] == 2
    assert counts["s1"]["Mixed forest"] == counts["s2"]["Mixed forest"] == 1
    assert s1.info["label_rule"]["stratify"] == "rarest_label"


def test_v2_fixture_multi_label(root):
    data = load_dataset(dataset_config("bigearthnet_v2", root, image_size=16))
    s1, s2 = data["s1"], data["s2"]
    assert len(s1.train) + len(s2.train) == 9 and len(s1.test) + len(s2.test) == 4
    multi = [row for d in data.values() for row in d.train.labels if row.sum() == 2]
    assert len(multi) == 2 and all(torch.nonzero(r).flatten().tolist() == [2, 4] for r in multi)  # arable, pastures


def test_single_label_is_one_override_away(root):
    cfg = dataset_config("bigearthnet", root, task="single_label")
    assert cfg["num_classes"] is None and cfg["train_splits"] == ["train"]
    data = load_dataset(cfg)
    assert data["s1"].class_names == ("Arable land", "Pastures", "Coniferous forest", "Marine waters")
    assert data["s1"].train.labels.ndim == 1 and data["s1"].info["label_rule"]["rule"] == "exactly_one"


def test_classes_restrict_the_label_set(root):
    data = load_dataset(dataset_config("bigearthnet", root, image_size=16, num_classes=2,
                                       classes=["Coniferous forest", "Mixed forest"]))
    d = data["s1"]
    assert d.class_names == ("Coniferous forest", "Mixed forest") and d.train.labels.shape[1] == 2
    rep = d.info["label_rule"]["splits"]["train"]["s1"]
    assert rep["outside_classes"] == 8 and rep["kept"] == 8  # 16 train+val patches, 8 without either class


# ---------------------------------------------------------------------------- data: bad input


def test_label_outside_the_mapping_names_the_patch(tmp_path):
    make_bigearthnet_v1(tmp_path)
    folder = tmp_path / "bigearthnet_v1" / "BigEarthNet-v1.0"
    patch = sorted(p for p in folder.iterdir())[0]
    meta = patch / f"{patch.name}_labels_metadata.json"
    meta.write_text(json.dumps({"labels": ["Coniferous forest", "Moon craters"]}))
    with pytest.raises(DataError, match="unknown BigEarthNet label 'Moon craters'") as e:
        load_dataset(dataset_config("bigearthnet", tmp_path, image_size=16))
    assert patch.name in str(e.value)


def test_v2_label_outside_the_19_classes_names_the_patch(tmp_path):
    make_bigearthnet_v2(tmp_path)
    path = tmp_path / "bigearthnet_v2" / "metadata.parquet"
    table = pq.read_table(path).to_pydict()
    table["labels"][0] = ["Coniferous forest", "Coniferous forests"]
    pq.write_table(pa.table(table), path)
    with pytest.raises(DataError, match=f"patch {table['patch_id'][0]}: unknown label 'Coniferous forests'"):
        load_dataset(dataset_config("bigearthnet_v2", tmp_path, image_size=16))


def test_patch_without_labels_names_the_patch_or_is_skipped(tmp_path):
    make_bigearthnet_v1(tmp_path)
    folder = tmp_path / "bigearthnet_v1" / "BigEarthNet-v1.0"
    patch = sorted(p for p in folder.iterdir())[0]
    # Airports has no 19-class counterpart: the patch has no label left
    (patch / f"{patch.name}_labels_metadata.json").write_text(json.dumps({"labels": ["Airports"]}))
    with pytest.raises(DataError, match=f"patch {patch.name}: no label of the 19-class nomenclature") as e:
        load_dataset(dataset_config("bigearthnet", tmp_path, image_size=16))
    assert str(patch) in str(e.value)
    data = load_dataset(dataset_config("bigearthnet", tmp_path, image_size=16, on_error="skip"))
    assert data["s2"].info["skipped"]["count"] == 1 and patch.name in data["s2"].info["skipped"]["files"][0]
    assert patch.name not in data["s2"].train.scene_ids  # (its S1 twin reads its own, intact json)
    assert data["s2"].info["label_rule"]["splits"]["train"]["s2"]["no_label"] == 1


def test_v2_patch_without_labels(tmp_path):
    make_bigearthnet_v2(tmp_path)
    path = tmp_path / "bigearthnet_v2" / "metadata.parquet"
    table = pq.read_table(path).to_pydict()
    table["labels"][1] = []
    pq.write_table(pa.table(table), path)
    with pytest.raises(DataError, match=f"patch {table['patch_id'][1]}: no label"):
        load_dataset(dataset_config("bigearthnet_v2", tmp_path, image_size=16))


def test_empty_class_after_filtering_names_the_setting(root):
    with pytest.raises(ValueError, match=r"class\(es\) \['Coastal wetlands'\] of dataset.classes have no training"):
        load_dataset(dataset_config("bigearthnet", root, image_size=16, num_classes=2,
                                    classes=["Coniferous forest", "Coastal wetlands"]))
    with pytest.raises(ValueError, match="unknown class"):
        load_dataset(dataset_config("bigearthnet", root, classes=["Forest"]))
    with pytest.raises(ValueError, match="dataset.num_classes=19, but the label set has 1 classes"):
        load_dataset(dataset_config("bigearthnet", root, image_size=16, classes=["Coniferous forest"]))


def test_multi_label_task_on_a_single_label_data_set_names_the_setting(root):
    from tests.conftest import tiny_dataset_cfg

    with pytest.raises(ValueError, match="dataset.task"):
        load_dataset({**tiny_dataset_cfg(), "task": "multi_label"})
    with pytest.raises(ValueError, match="dataset.task must be one of"):
        load_dataset(dataset_config("bigearthnet", root, task="multilabel"))


# ------------------------------------------------------------------------- data: shared sample


@needs_data
def test_shared_sample_every_pair_is_used():
    data = load_dataset(dataset_config("bigearthnet", SHARED))
    s1, s2 = data["s1"], data["s2"]
    assert len(s1.train) + len(s2.train) == 26 and len(s1.test) + len(s2.test) == 10  # all 36 pairs
    assert not set(s1.train.scene_ids) & set(s2.train.scene_ids)
    s2_dir = SHARED / "bigearthnet_v1" / "BigEarthNet-v1.0"
    for d in data.values():
        for scene, row in zip(d.train.scene_ids + d.test.scene_ids, torch.cat([d.train.labels, d.test.labels])):
            names = json.loads((s2_dir / scene / f"{scene}_labels_metadata.json").read_text())["labels"]
            assert torch.nonzero(row).flatten().tolist() == _v1_labels(names)
    total = {c: s1.info["class_counts"]["train"][c] + s2.info["class_counts"]["train"][c] for c in CLASSES_19}
    assert total["Mixed forest"] == 8 and total["Inland wetlands"] == 1  # of the 26 train+val patches
    assert s1.info["label_rule"]["empty_classes"] == ["Industrial or commercial units", "Permanent crops",
                                                      "Natural grassland and sparsely vegetated areas",
                                                      "Beaches, dunes, sands", "Coastal wetlands"]


# ------------------------------------------------------------- compared methods: multi-label forms


def test_cdan_conditions_on_sigmoid_outputs():
    f = torch.tensor([[1.0, 2.0]])
    g = torch.sigmoid(torch.tensor([[0.0, math.log(3.0)]]))  # (1/2, 3/4): two labels, not a distribution
    assert multilinear_map(f, g).tolist() [0] == pytest.approx([0.5, 1.0, 0.75, 1.5])
    # the label-set entropy: C log 2 for p = 1/2 everywhere, ~0 for confident outputs
    assert label_set_entropy(torch.full((1, 3), 0.5)).item() == pytest.approx(3 * math.log(2), abs=1e-4)
    assert label_set_entropy(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-4)
    w = entropy_weights(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([0, 0]), multi_label=True)
    raw = torch.tensor([1 + math.exp(-2 * math.log(2)), 2.0])
    assert w.tolist() == pytest.approx((raw / raw.mean()).tolist(), abs=1e-4)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(2, 2)

    model = Head()
    obj = CDANObjective(["a", "b"], 2, 2, multi_label=True, hidden=4, dropout=0.0)
    seen = {}

    def conditioned(f_, g_):
        seen["g"] = g_
        return multilinear_map(f_, g_)

    obj.conditioned = conditioned
    feats = {"a": torch.randn(3, 2), "b": torch.randn(3, 2)}
    obj(model, feats, {})
    logits = model.backbone(torch.cat([feats["a"], feats["b"]]))
    assert torch.allclose(seen["g"], torch.sigmoid(logits))  # not the softmax


def test_multi_label_mcc():
    from fed_uml.methods.mcc import MCCObjective

    assert multi_label_mcc_loss(torch.zeros(4, 3)).item() == pytest.approx(0.5)
    # T = 1, one class, logits +-ln 3: p = (3/4, 1/4); equal entropies, so weights 1; C = Y^T Y =
    # [[5/8, 3/8], [3/8, 5/8]] (columns already sum to 1); off-diagonal mass 3/4 over 2 classes
    z = torch.tensor([[math.log(3.0)], [-math.log(3.0)]])
    assert multi_label_mcc_loss(z, temperature=1.0).item() == pytest.approx(0.375)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Identity()

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.3, -2.0]])
    obj = MCCObjective(["a"], multi_label=True)
    assert obj(Head(), {"a": logits}, {}).item() == pytest.approx(multi_label_mcc_loss(logits, 2.5).item())
    assert MCCObjective(["a"])(Head(), {"a": logits}, {}).item() == pytest.approx(mcc_loss(logits, 2.5).item())
    confident = torch.tensor([[30.0, -30.0], [-30.0, 30.0], [30.0, 30.0]])
    assert multi_label_mcc_loss(confident).item() == pytest.approx(0.0, abs=1e-4)
    # co-occurring labels are not confusion (the softmax form would penalise the last row)
    assert mcc_loss(confident).item() > 0.1


def test_mdd_intra_class_distance_with_shared_labels():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    one_hot = torch.tensor([[1, 0], [1, 0], [0, 1]])
    assert intra_class_distance(x, one_hot).item() == pytest.approx(5.0)
    single = intra_class_distance(x, torch.tensor([0, 0, 1])).item()
    assert intra_class_distance(x, one_hot).item() == pytest.approx(single)
    # pairs (0,1) share 2 labels (d 5), (0,2) 1 (d 10), (1,2) 1 (d 5): (2 x 5 + 10 + 5) / 4
    multi = torch.tensor([[1, 1], [1, 1], [0, 1]])
    assert intra_class_distance(x, multi).item() == pytest.approx(6.25)
    assert intra_class_distance(x, torch.tensor([[1, 0], [0, 1], [0, 0]])).item() == 0.0


# ------------------------------------------------------------------------- results and reports


def _ml(v: float) -> dict:
    return {"map_macro": v, "map_micro": v / 2, "f1_macro": v / 4}


def test_results_carry_the_task_metrics(tmp_path):
    entry = modality_result(_ml(0.4), _ml(0.6), True, 10, 5)
    assert entry["map_macro"] == 0.6 and entry["map_macro_before_calibration"] == 0.4
    assert entry["f1_macro_after_calibration"] == 0.15 and "accuracy" not in entry
    assert modality_result(0.3, 0.5, False, 1, 1)["accuracy"] == 0.3
    with pytest.raises(ValueError, match="one task"):
        modality_result({"map_macro": 0.1}, {"map_macro": 0.1}, True, 1, 1)
    res = make_results("uml", "bigearthnet", 0, False, {"s1": entry, "s2": modality_result(_ml(0.2), _ml(0.2),
                                                                                             True, 1, 1)}, {}, 1.0)
    assert res["task"] == "multi_label" and res["primary_metric"] == "map_macro"
    assert res["mean_map_macro"] == pytest.approx(0.4) and "mean_accuracy" not in res
    back = read_results(write_json_atomic(tmp_path / "results.json", res))
    assert back["modalities"]["s1"] == entry


def test_reports_on_the_wire_and_their_aggregation():
    from server.report import summary_table
    from server.roster import Member
    from server.summary import calibration_results, evaluation_metrics, train_metrics

    r = CalibrateReport(10, 20, None, None, True, _ml(0.2), _ml(0.6))
    wire = r.to_dict()
    assert wire["map-macro-before-calibration"] == 0.2 and "accuracy-before-calibration" not in wire
    assert CalibrateReport.from_record(wire) == r
    e = EvaluateReport(4, None, _ml(0.5))
    assert EvaluateReport.from_record(e.to_dict()) == e and "accuracy" not in e.to_dict()
    t = TrainReport(8, 2, 0.7, None)
    assert TrainReport.from_record(t.to_dict()) == t
    assert train_metrics([("s1", t)]) == {"s1/train_loss": 0.7}
    evals = evaluation_metrics([("s1", EvaluateReport(10, None, _ml(0.2))), ("s1", EvaluateReport(30, None, _ml(0.6)))])
    assert evals["s1/test_map_macro"] == pytest.approx(0.5) and evals["s1/test_f1_macro"] == pytest.approx(0.125)
    members = [Member(node_id=i, modality="s1", name=f"s1-{i}", n_train=20, n_test=n)
               for i, n in ((1, 10), (2, 30))]
    reports = [(members[0], CalibrateReport(10, 20, None, None, True, _ml(0.2), _ml(0.4))),
               (members[1], CalibrateReport(30, 20, None, None, True, _ml(0.6), _ml(0.8)))]
    results, per_inst = calibration_results(reports, ["s1"], calibrated=True)
    m = results["s1"]  # weighted by test examples: (10 x 0.4 + 30 x 0.8) / 40
    assert m["map_macro"] == pytest.approx(0.7) and m["map_macro_before_calibration"] == pytest.approx(0.5)
    assert m["map_micro"] == pytest.approx(0.35) and m["n_test"] == 40 and m["institutions"] == 2
    assert per_inst[0]["map_macro_after_calibration"] == 0.4
    table = summary_table(results, True)
    assert "mAP macro" in table and "0.7000" in table and "accuracy" not in table.splitlines()[0]


# ------------------------------------------------------------------ every method, centralized


def _cfg(root, method: str, *extra: str) -> dict:
    from fed_uml.federated.config import compose_config

    return compose_config((f"method={method}", "dataset=bigearthnet", f"dataset.root={root}", "dataset.image_size=16",
                           "model.width=8", "training.epochs=2", "training.batch_size=4", *extra))


@pytest.mark.parametrize("method", ["uml", "unimodal", "isca", "dann", "cdan", "mcc", "mdd"])
def test_every_method_on_multi_label_data(root, tmp_path, method):
    from fed_uml.centralized import run_centralized

    extra = ("method.mcc_weight=0.1",) if method == "isca" else ()
    res = run_centralized(_cfg(root, method, *extra), tmp_path)
    assert res["task"] == "multi_label" and math.isfinite(res["mean_map_macro"])
    for m in ("s1", "s2"):
        entry = res["modalities"][m]
        assert 0 < entry["map_macro"] <= 1 and 0 < entry["map_micro"] <= 1 and 0 <= entry["f1_macro"] <= 1
        assert "accuracy" not in entry
    assert read_results(tmp_path / "results.json")["modalities"] == res["modalities"]
    assert (tmp_path / "model-s1.pt").is_file()


def test_unimodal_takes_the_steps_of_uml_on_multi_label_data(root, tmp_path):
    from fed_uml.centralized import run_centralized

    uml = run_centralized(_cfg(root, "uml"))
    uni = run_centralized(_cfg(root, "unimodal"))
    largest = max(uml["modalities"][m]["n_train"] for m in ("s1", "s2"))
    for m in ("s1", "s2"):  # 2 epochs of passes over the largest modality, in batches of 4
        assert uni["modalities"][m]["optimizer_steps"] == uml["modalities"][m]["optimizer_steps"]
        assert uml["modalities"][m]["optimizer_steps"] == 2 * math.ceil(largest / 4)


def test_tables_of_multi_label_runs(tmp_path):
    from experiments import tabulation

    for method, v in (("unimodal", 0.4), ("uml", 0.6)):
        for seed in (0, 1):
            res = make_results(method, "bigearthnet", seed, False,
                               {m: modality_result(_ml(v), _ml(v + 0.01 * seed), True, 10, 5) for m in ("s1", "s2")},
                               {"method": {"name": method}}, 1.0)
            write_json_atomic(tmp_path / method / str(seed) / "results.json", res)
    md = tabulation.make_tables(tmp_path)
    assert "### Table 1: macro mAP (%), unpaired multimodal methods" in md
    # a single-label run beside them is tabulated by its own headline metric, accuracy
    write_json_atomic(tmp_path / "single" / "results.json", make_results(
        "uml", "synthetic", 0, False, {"sar": modality_result(0.2, 0.3, True, 10, 5)}, {}, 1.0))
    mixed = tabulation.make_tables(tmp_path)
    assert "Metric: `accuracy`, `map_macro`" in mixed and "accuracy / macro mAP (%)" in mixed
    assert "| UML (proposed) | 60.50 ± 0.71 | 60.50 ± 0.71 | 60.50 ± 0.71 | 30.00 | 30.00 |" in mixed
    (tmp_path / "single" / "results.json").unlink()
    assert "| UML (proposed) | 60.50 ± 0.71 | 60.50 ± 0.71 | 60.50 ± 0.71 |" in md
    md = tabulation.make_tables(tmp_path, metric="f1_macro_before_calibration")
    assert "macro F1 before calibration (%)" in md and "| UML (proposed) | 15.00 ± 0.00 | 15.00 ± 0.00 |" in md
    with pytest.raises(ValueError, match="no metric 'accuracy'"):
        tabulation.make_tables(tmp_path, metric="accuracy")


# ------------------------------------------------------------------------- federated institutions


@needs_data
def test_institutions_report_multi_label_metrics_on_the_shared_sample(tmp_path):
    from fed_uml.federated.backbone import initial_backbone
    from fed_uml.federated.config import config_from_run_config
    from fed_uml.federated.institution import Institution
    from fed_uml.federated.roles import institution_for_node
    from server.roster import Member
    from server.summary import calibration_results

    cfg = config_from_run_config({"dataset": "bigearthnet", "data-root": str(SHARED),
                                  "overrides": "dataset.image_size=16 model.width=8 training.batch_size=4",
                                  "partitioning": "dirichlet"})
    assert cfg["dataset"]["num_classes"] == 19
    backbone = initial_backbone(cfg)
    members, reports, n_train = [], [], 0
    for node in range(4):  # s1-0, s2-0, s1-1, s2-1
        inst = Institution(cfg, institution_for_node({"partition-id": node, "num-partitions": 4},
                                                     cfg["dataset"]["modalities"], 0))
        assert inst.describe().num_classes == 19 and inst.train.labels.shape[1] == 19
        n_train += len(inst.train)
        shared, private, train = inst.fit(backbone, None, 1, 1)
        assert train.train_accuracy is None and math.isfinite(train.train_loss)
        ev = inst.evaluate(shared, private)
        assert ev.accuracy is None and set(ev.scores) == {"map_macro", "map_micro", "f1_macro"}
        cal = inst.calibrate(shared, private, model_dir=tmp_path / inst.ident.name)
        assert set(cal.scores_after) == set(ev.scores) and cal.model_saved
        assert CalibrateReport.from_record(cal.to_dict()) == cal
        d = inst.describe()
        members.append(Member(node, d.modality, d.institution, d.n_train, d.n_test))
        reports.append((members[-1], cal))
    assert n_train == 26  # every train+val pair, each with one institution
    results, _ = calibration_results(reports, ["s1", "s2"], calibrated=True)
    for m in ("s1", "s2"):
        mine = [r for mm, r in reports if mm.modality == m]
        expect = sum(r.num_examples * r.scores_after["map_macro"] for r in mine) / sum(r.num_examples for r in mine)
        assert results[m]["map_macro"] == pytest.approx(expect)
    assert results["s1"]["n_test"] + results["s2"]["n_test"] == 10
