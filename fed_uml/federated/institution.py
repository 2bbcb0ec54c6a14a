"""Client-side work of one institution.

Its local data share, private state, training, evaluation and BN calibration. Only the ClientApp
imports this module.

The institution's model has one projection (its modality) and the shared backbone. What
it keeps private between rounds: the projection and every BN buffer (`private_state`).
What it returns: the backbone parameters (`shared_state`) and scalar reports
(`fed_uml.federated.protocol`). What it writes to its own disk after calibration: its
deployed model h_k (`fed_uml.model_file`).
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fed_uml.calibration import calibrate_modality
from fed_uml.data import load_dataset
from fed_uml.data.normalize import standardize
from fed_uml.federated import stages
from fed_uml.federated.partition import split_indices
from fed_uml.federated.protocol import CalibrateReport, Description, EvaluateReport, TrainReport
from fed_uml.federated.roles import InstitutionId
from fed_uml.methods import build_model
from fed_uml.modality import ModalityData
from fed_uml.model_file import deployed_as_trained, model_filename, save_model
from fed_uml.models import UMLModel, model_from_config, private_state, shared_state
from fed_uml.schema import settings_of
from fed_uml.training import TrainSettings, evaluate_task, train_unpaired

log = logging.getLogger(__name__)


def _modality_seed(seed: int, *parts: object) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % 2**31


@functools.lru_cache(maxsize=16)
def _skeleton(model_json: str, modality: str, channels: int, num_classes: int) -> UMLModel:
    """One model object per architecture in the process, reused by every institution of the modality.

    One message at a time: `Institution.model` loads the whole state (every parameter and buffer)
    into it, so nothing of one institution or round carries to the next, and the random
    initialisation of a new model (a third of a small institution's round at 1,000 institutions) is
    not paid for every message.
    """
    return model_from_config(json.loads(model_json), {modality: channels}, num_classes)


@functools.lru_cache(maxsize=8)
def _load_modality(dataset_json: str, modality: str) -> ModalityData:
    """One modality of a data set in physical units, kept in the process.

    A Ray actor that plays many institutions of the same modality reads (or renders) the data once.
    """
    cfg = json.loads(dataset_json)
    cfg["modalities"] = [modality]
    return load_dataset(cfg, normalize=False)[modality]


def _copied(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items()}


class Institution:
    """One institution: holds one modality's local data and its private model state.

    Its data are its share of the modality (in physical units), standardised per band with
    the statistics of its OWN training share, the only data a real institution has: they
    scale its training and test images, and go into its model file (`data.info`).
    """

    def __init__(self, cfg: Mapping[str, Any], ident: InstitutionId):
        """Read the run's composed config `cfg` as typed settings.

        `cfg`: the run's composed config as plain containers (it goes into the model file), read as
        typed settings (`run_settings`, `fed_uml.schema.settings_of`).
        """
        self.cfg, self.ident = cfg, ident
        self.run_settings = settings = settings_of(cfg)
        dataset_cfg = dict(cfg["dataset"])  # the loader's: every data set reads its own settings
        if ident.data_root:
            dataset_cfg["root"] = ident.data_root
        full = _load_modality(json.dumps(dataset_cfg, sort_keys=True), ident.modality)
        fed = settings.federated
        seed = _modality_seed(settings.seed, "partition", ident.modality)
        train_idx = split_indices(
            full.train.labels.numpy(), ident.count, ident.index, fed.partitioning, fed.dirichlet_alpha, seed
        )
        test_idx = split_indices(full.test.labels.numpy(), ident.count, ident.index, "iid", 1.0, seed + 1, 1)
        local = ModalityData(ident.modality, full.train.subset(train_idx), full.test.subset(test_idx),
                             full.class_names, full.band_names, full.info)
        self.data = standardize(local)
        self.train, self.test = self.data.train, self.data.test
        self.settings = TrainSettings.of(settings)
        # what picks the process's model object (`_skeleton`), worked out once, not per message
        self._architecture = (json.dumps(dict(cfg["model"]), sort_keys=True, default=str), ident.modality,
                              self.data.channels, self.data.num_classes)

    def describe(self) -> Description:
        """The institution's `Description`: modality, name, data sizes, classes and channels."""
        return Description(modality=self.ident.modality, institution=self.ident.name, n_train=len(self.train),
                           n_test=len(self.test), num_classes=self.data.num_classes, in_channels=self.data.channels)

    def initial_private_state(self) -> dict[str, torch.Tensor]:
        """Projection weights for round 1, seeded by the run, never by the node.

        `model.projection_init=aligned`: seeded by the run's seed alone, which is the draw the
        server's initial backbone comes from (`initial_backbone`), so institutions of every
        modality start from one aligned projection, as in a centralized model. `independent`:
        seeded per modality, so institutions of a modality share a projection and modalities
        differ.
        """
        seed = self.run_settings.seed
        if self.run_settings.model.projection_init == "aligned":
            torch.manual_seed(seed)
        else:
            torch.manual_seed(_modality_seed(seed, "projection", self.ident.modality))
        return dict(private_state(self._new_model()))

    def _new_model(self) -> UMLModel:
        return build_model(self.cfg["model"], {self.ident.modality: self.data})

    def model(self, backbone: Mapping[str, torch.Tensor], private: Mapping[str, torch.Tensor] | None) -> UMLModel:
        """The institution's model with this backbone and private state.

        The process's model object for its architecture (`_skeleton`): valid until the next call.
        """
        with stages.stage("client.load_state"):
            model = _skeleton(*self._architecture)
            state = dict(private if private is not None else self.initial_private_state())
            state.update(backbone)  # float32 from the wire (`from_wire`); load_state_dict copies into float32
            missing = set(model.state_dict()) - set(state)
            if missing:
                raise ValueError(f"institution {self.ident.name}: the server sent no tensors for "
                                 f"{sorted(missing)[:3]}...")
            model.load_state_dict(state, strict=True)
        return model

    def fit(self, backbone: Mapping[str, torch.Tensor], private: Mapping[str, torch.Tensor] | None, server_round: int,
            local_epochs: int, *, num_rounds: int | None = None,
            local_steps: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], TrainReport]:
        """L local epochs (or `local_steps` steps) of round `server_round` of `num_rounds`.

        Returns (shared tensors, private tensors, report). The ClientApp passes the schedule the
        server sent (`TrainInstruction`); called in-process without it, the schedule is the run's
        settings (`federated.num_rounds`, `federated.local_steps`). Federated UML and the federated
        unimodal baseline train an institution identically (same steps on the same data); they
        differ only in which institutions the server averages together.
        """
        model = self.model(backbone, private)
        g = torch.Generator().manual_seed(_modality_seed(self.run_settings.seed, "train", self.ident.name,
                                                         server_round))
        fed = self.run_settings.federated
        rounds = fed.num_rounds if num_rounds is None else int(num_rounds)
        local_steps = fed.local_steps if local_steps is None else int(local_steps)
        if local_steps > 0:  # a fixed number of steps, whatever the institution's data size
            epochs, steps = 1, local_steps
        else:
            epochs, steps = local_epochs, None
        with stages.stage("client.train"):
            history = train_unpaired(
                model, {self.ident.modality: self.train}, self.settings, epochs=epochs, generator=g,
                desc=f"{self.ident.name} round {server_round}",
                start_epoch=(server_round - 1) * epochs, total_epochs=rounds * epochs, steps_per_epoch=steps,
            )
        last = history[-1] if history else {}
        multi_label = self.train.labels.ndim == 2  # no training accuracy for multi-hot targets
        report = TrainReport(
            num_examples=len(self.train),
            optimizer_steps=sum(r["steps"] for r in history),
            train_loss=float(last.get(f"{self.ident.modality}/loss", float("nan"))),
            train_accuracy=None if multi_label else float(
                last.get(f"{self.ident.modality}/train_accuracy", float("nan"))),
        )
        # copies: the model object is the process's for this architecture (`_skeleton`), and the
        # next message loads another state into it
        with stages.stage("client.copy_state"):
            return _copied(shared_state(model)), _copied(private_state(model)), report

    def evaluate(self, backbone: Mapping[str, torch.Tensor], private: Mapping[str, torch.Tensor] | None
                 ) -> EvaluateReport:
        """Test accuracy (single-label) or the multi-label metrics (`scores`) of the model on the local test share."""
        model = self.model(backbone, private)
        metrics = evaluate_task(model, self.test, self.ident.modality, device=self.settings.device)
        return EvaluateReport(num_examples=len(self.test), accuracy=metrics.pop("accuracy", None), scores=metrics)

    def calibrate(self, backbone: Mapping[str, torch.Tensor], private: Mapping[str, torch.Tensor] | None,
                  model_dir: str | Path | None = None,
                  epochs: int | None = None) -> CalibrateReport:
        """Algorithm 1 on the local training data; test metrics before and after.

        `epochs` passes (the ClientApp passes the server's `CalibrateInstruction`, in-process the
        default is `calibration.epochs`); the metrics are accuracy, or the multi-label `scores`.

        With `model_dir` (node-local), the deployed model (h_k, or the model as trained where
        the method deploys that) is written to `model_dir/model-<modality>.pt`; only the
        flag `model_saved` goes into the report, never the model.
        """
        model = self.model(backbone, private)
        calibration = self.run_settings.calibration
        h = calibrate_modality(
            model.projection(self.ident.modality), model.backbone, self.train.images,
            epochs=calibration.epochs if epochs is None else int(epochs),
            batch_size=calibration.batch_size, modality=self.ident.modality, device=self.settings.device,
        )
        saved = False
        if model_dir is not None:
            use_calibrated = self.run_settings.method.calibrate
            deployed = h if use_calibrated else deployed_as_trained(model, self.ident.modality)
            path = Path(model_dir) / model_filename(self.ident.modality)
            try:
                save_model(path, deployed, self.data, self.cfg, calibrated=use_calibrated,
                           institution=self.ident.name, federated=True)
                saved = True
                log.info("institution %s: wrote its model to %s", self.ident.name, path)
            except OSError as e:
                log.warning("institution %s: cannot write its model to %s: %s", self.ident.name, path, e)
        before = evaluate_task(model, self.test, self.ident.modality, device=self.settings.device)
        after = evaluate_task(h, self.test, device=self.settings.device)
        return CalibrateReport(
            num_examples=len(self.test),
            n_train=len(self.train),
            accuracy_before_calibration=before.pop("accuracy", None),
            accuracy_after_calibration=after.pop("accuracy", None),
            model_saved=saved,
            scores_before=before,
            scores_after=after,
        )
