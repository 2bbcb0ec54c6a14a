"""The catalog of data sets (fed_uml.data.catalog): the built-ins, user registration, duplicates refused."""

from __future__ import annotations

import pytest
import torch

from fed_uml.data import available_datasets, catalog, load_dataset, register_dataset
from fed_uml.modality import ArrayDataset, ModalityData
from tests.conftest import tiny_dataset_cfg

BUILTIN = ["bigearthnet", "bigearthnet_v2", "bigearthnet_v2_lmdb", "eurosat", "eurosat_ms", "sen12ms", "synthetic"]


@pytest.fixture
def private_catalog(monkeypatch):
    """Registrations made by a test stay in the test."""
    monkeypatch.setattr(catalog, "_LOADERS", dict(catalog._LOADERS))


def _constant_loader(cfg):
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    y = torch.tensor([0, 1])
    return {"only": ModalityData("only", ArrayDataset(x, y), ArrayDataset(x, y), ("a", "b"), ("B1",))}


def test_the_builtin_data_sets_are_listed_without_any_import_side_effect():
    assert available_datasets() == BUILTIN


def test_registering_a_name_twice_is_refused(private_catalog):
    with pytest.raises(ValueError, match="'synthetic' is already registered"):
        register_dataset("synthetic", _constant_loader)
    register_dataset("mine", _constant_loader)
    with pytest.raises(ValueError, match="'mine' is already registered"):
        register_dataset("mine", _constant_loader)
    assert catalog._LOADERS["mine"] is _constant_loader
    assert catalog._LOADERS["synthetic"] is catalog.BUILTIN["synthetic"]


def test_a_registered_loader_is_loaded_and_normalised(private_catalog):
    register_dataset("mine", _constant_loader)
    assert "mine" in available_datasets()
    raw = load_dataset({"name": "mine"}, normalize=False)["only"]
    assert torch.equal(raw.train.images, _constant_loader({})["only"].train.images)
    scaled = load_dataset({"name": "mine"})["only"]
    assert "band_mean" in scaled.info and abs(float(scaled.train.images.mean())) < 1e-5


def test_bad_registrations_and_unknown_names(private_catalog):
    with pytest.raises(ValueError, match="non-empty string"):
        register_dataset("", _constant_loader)
    with pytest.raises(TypeError, match="must be callable"):
        register_dataset("mine", "not a loader")
    with pytest.raises(ValueError, match=r"unknown dataset 'nope' \(setting dataset.name\)"):
        load_dataset({"name": "nope"})


def test_normalize_false_then_standardize_equals_load_dataset():
    from fed_uml.data.normalize import standardize

    cfg = tiny_dataset_cfg()
    raw = load_dataset(cfg, normalize=False)
    norm = load_dataset(cfg)
    for m in raw:
        assert torch.equal(standardize(raw[m]).train.images, norm[m].train.images)
        assert torch.equal(standardize(raw[m]).test.images, norm[m].test.images)
