"""Client-side work of one institution: its local data share, private state, training,
evaluation and BN calibration. Only the ClientApp imports this module.

The institution's model has one projection (its modality) and the shared backbone. What
it keeps private between rounds: the projection and every BN buffer (`private_state`).
What it returns: the backbone parameters (`shared_state`) and scalar metrics. What it writes
to its own disk after calibration: its deployed model h_k (`fed_uml.model_file`).
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from fed_uml.calibration import calibrate_modality
from fed_uml.data import load_dataset
from fed_uml.modality import ModalityData
from fed_uml.federated.institutions import InstitutionId
from fed_uml.federated.partition import split_indices
from fed_uml.methods import build_model, train_settings
from fed_uml.model_file import deployed_as_trained, model_filename, save_model
from fed_uml.models import UMLModel, private_state, shared_state
from fed_uml.training import evaluate, train_unpaired

log = logging.getLogger(__name__)


def _modality_seed(seed: int, *parts) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % 2**31


@functools.lru_cache(maxsize=8)
def _load_modality(dataset_json: str, modality: str) -> ModalityData:
    """One modality of a data set, kept in the process: a Ray actor that plays many
    institutions of the same modality reads (or renders) the data once."""
    cfg = json.loads(dataset_json)
    cfg["modalities"] = [modality]
    return load_dataset(cfg)[modality]


class Institution:
    """One institution: holds one modality's local data and its private model state."""

    def __init__(self, cfg: Mapping, ident: InstitutionId):
        self.cfg, self.ident = cfg, ident
        dataset_cfg = dict(cfg["dataset"])
        if ident.data_root:
            dataset_cfg["root"] = ident.data_root
        full = _load_modality(json.dumps(dataset_cfg, sort_keys=True), ident.modality)
        fed = cfg["federated"]
        seed = _modality_seed(cfg["seed"], "partition", ident.modality)
        train_idx = split_indices(
            full.train.labels.numpy(), ident.count, ident.index, fed["partitioning"], fed["dirichlet_alpha"], seed
        )
        test_idx = split_indices(full.test.labels.numpy(), ident.count, ident.index, "iid", 1.0, seed + 1, 1)
        self.train = full.train.subset(train_idx)
        self.test = full.test.subset(test_idx)
        self.data = ModalityData(ident.modality, self.train, self.test, full.class_names, full.band_names, full.info)
        self.settings = train_settings(cfg)

    @property
    def modality_index(self) -> int:
        return list(self.cfg["dataset"]["modalities"]).index(self.ident.modality)

    def describe(self) -> dict[str, float]:
        return {
            "modality-index": self.modality_index,
            "institution-index": self.ident.index,
            "n-train": len(self.train),
            "n-test": len(self.test),
            "num-classes": self.data.num_classes,
            "in-channels": self.data.channels,
        }

    def initial_private_state(self) -> dict[str, torch.Tensor]:
        """Projection weights for round 1, seeded by the run, never by the node.

        `model.projection_init=aligned`: seeded by the run's seed alone, which is the draw the
        server's initial backbone comes from (`initial_backbone`), so institutions of every
        modality start from one aligned projection, as in a centralized model. `independent`:
        seeded per modality, so institutions of a modality share a projection and modalities
        differ.
        """
        if self.cfg["model"].get("projection_init", "aligned") == "aligned":
            torch.manual_seed(int(self.cfg["seed"]))
        else:
            torch.manual_seed(_modality_seed(self.cfg["seed"], "projection", self.ident.modality))
        return dict(private_state(self._new_model()))

    def _new_model(self) -> UMLModel:
        return build_model(self.cfg["model"], {self.ident.modality: self.data})

    def model(self, backbone: Mapping[str, torch.Tensor], private: Mapping[str, torch.Tensor] | None) -> UMLModel:
        model = self._new_model()
        state = dict(private if private is not None else self.initial_private_state())
        state.update({k: v.float() for k, v in backbone.items()})
        missing = set(model.state_dict()) - set(state)
        if missing:
            raise ValueError(f"institution {self.ident.name}: the server sent no tensors for {sorted(missing)[:3]}...")
        model.load_state_dict(state, strict=True)
        return model

    def fit(self, backbone, private, server_round: int, local_epochs: int):
        """L local epochs (or `federated.local_steps` steps); returns (shared tensors, private
        tensors, metrics). Federated UML and the federated unimodal baseline train an
        institution identically (same steps on the same data); they differ only in which
        institutions the server averages together."""
        model = self.model(backbone, private)
        g = torch.Generator().manual_seed(_modality_seed(self.cfg["seed"], "train", self.ident.name, server_round))
        rounds = int(self.cfg["federated"]["num_rounds"])
        local_steps = int(self.cfg["federated"].get("local_steps") or 0)
        if local_steps > 0:  # a fixed number of steps, whatever the institution's data size
            epochs, steps = 1, local_steps
        else:
            epochs, steps = local_epochs, None
        history = train_unpaired(
            model, {self.ident.modality: self.train}, self.settings, epochs=epochs, generator=g,
            desc=f"{self.ident.name} round {server_round}",
            start_epoch=(server_round - 1) * epochs, total_epochs=rounds * epochs, steps_per_epoch=steps,
        )
        last = history[-1] if history else {}
        metrics = {
            "num-examples": len(self.train),
            "optimizer-steps": sum(r["steps"] for r in history),
            "train-loss": float(last.get(f"{self.ident.modality}/loss", float("nan"))),
            "train-accuracy": float(last.get(f"{self.ident.modality}/train_accuracy", float("nan"))),
            "modality-index": self.modality_index,
            "institution-index": self.ident.index,
        }
        return shared_state(model), private_state(model), metrics

    def evaluate(self, backbone, private) -> dict[str, float]:
        model = self.model(backbone, private)
        return {
            "num-examples": len(self.test),
            "accuracy": evaluate(model, self.test, self.ident.modality, device=self.settings.device),
            "modality-index": self.modality_index,
            "institution-index": self.ident.index,
        }

    def calibrate(self, backbone, private, model_dir: str | Path | None = None) -> dict[str, float]:
        """Algorithm 1 on the local training data; test accuracy before and after.

        With `model_dir` (node-local), the deployed model (h_k, or the model as trained where
        the method deploys that) is written to `model_dir/model-<modality>.pt`; only the
        scalar `model-saved` (1 or 0) goes into the reply, never the model.
        """
        model = self.model(backbone, private)
        cal_cfg = self.cfg.get("calibration") or {}
        h = calibrate_modality(
            model.projection(self.ident.modality), model.backbone, self.train.images,
            epochs=int(cal_cfg.get("epochs", 1)), batch_size=int(cal_cfg.get("batch_size", 64)),
            modality=self.ident.modality, device=self.settings.device,
        )
        saved = 0
        if model_dir is not None:
            method = self.cfg["method"]
            use_calibrated = bool(method.get("calibrate", method["name"] == "uml"))
            deployed = h if use_calibrated else deployed_as_trained(model, self.ident.modality)
            path = Path(model_dir) / model_filename(self.ident.modality)
            try:
                save_model(path, deployed, self.data, self.cfg, calibrated=use_calibrated,
                           institution=self.ident.name, federated=True)
                saved = 1
                log.info("institution %s: wrote its model to %s", self.ident.name, path)
            except OSError as e:
                log.warning("institution %s: cannot write its model to %s: %s", self.ident.name, path, e)
        return {
            "num-examples": len(self.test),
            "accuracy-before-calibration": evaluate(model, self.test, self.ident.modality, device=self.settings.device),
            "accuracy-after-calibration": evaluate(h, self.test, device=self.settings.device),
            "n-train": len(self.train),
            "modality-index": self.modality_index,
            "institution-index": self.ident.index,
            "model-saved": saved,
        }


