"""The file of one trained single-sensor model h_k = g_k o f_k: write it where it was made, load it anywhere.

One file per modality (`model-<modality>.pt`), written with `torch.save` from plain tensors,
strings, numbers, lists and dicts only, so that `torch.load(path, weights_only=True)` reads
it (no pickled code). Keys:

    format            "fed-uml/model"
    format_version    FORMAT_VERSION (a reader refuses any other)
    fed_uml_version   the fed-uml version that wrote it
    modality          the modality (sensor) the model classifies, e.g. "sar"
    bands             its band names, in the order of the input channels
    band_mean, band_std  float32 tensors (C,): the per-band statistics of its training images,
                      applied as (x - mean) / std to inputs in physical units
    image_size        [H, W] of the training images (inputs are resampled to it)
    native_size       [H, W] of the patches the data set's reader read before resampling them
                      to image_size (BigEarthNet: 120, its 10 m grid, whatever the sizes of its
                      20 m and 60 m band files); `experiments.predict` refuses inputs of any
                      other size unless asked to resample them (`--resize`)
    class_names       the label set, in the order of the logits
    task              "single_label" (softmax, one class: the argmax) or "multi_label"
                      (sigmoid per class, every class whose score reaches its threshold)
    thresholds        multi-label: the decision threshold of every class (setting
                      `decision`, `fed_uml.metrics`); single-label: null
    thresholds_chosen multi-label: "fixed" (every class at decision.threshold) or "tuned"
                      (per class, the F1-maximising threshold on the model's training data)
    architecture      {backbone, specific_layers, projection_init, in_channels, num_classes,
                      kwargs}: what `create_model` needs to rebuild the network
    calibrated        true for the BN-calibrated h_k (Algorithm 1); false where the method deploys
                      the model as trained (the unimodal baseline)
    source            {dataset, reader, sensor, method, federated, institution, seed}
    settings          the resolved config of the run, as JSON text
    settings_digest   SHA-256 of `settings`
    state_dict        {"projection.<...>": tensor, "backbone.<...>": tensor} of `CalibratedModel`
    digest            SHA-256 over every other key and every tensor's dtype, shape and bytes

`load_model` refuses, with an error that names the file, anything that is not such a file
(a `backbone.pt`, a checkpoint, a truncated file), another format version, a digest that
does not fit the contents (an edited or corrupt file), fields that contradict each other
(bands vs the network, vs the bands the recorded settings select for the modality and vs
the sensor of the recorded data set; image and native sizes that are not two positive
integers or not the recorded settings' image size; a task and thresholds that do not fit
the classes), bands or a modality other than the caller expects, and weights that do not fit
the architecture.

The digest is an unkeyed SHA-256: it catches accidental corruption and edits of one field,
not a party who edits the file consistently and recomputes it (README "Reliability and
security": sign the file where authenticity matters).

Version 1 (before the task was recorded) is read only where the task is certain to be
single-label: its recorded settings say `dataset.task=single_label` or no task at all (every
model before multi-label training existed). A multi-label version-1 file is refused with the
way to rewrite it as version 2 (`upgrade_model_file`, `python -m experiments.predict OLD.pt
--upgrade NEW.pt`), or to re-run the training.
`export_program` writes a `torch.export` program (normalisation included) that serves the
same logits with PyTorch alone. No Flower import here: the library writes and reads these files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fed_uml import __version__
from fed_uml.calibration import CalibratedModel
from fed_uml.data.catalog import modality_bands
from fed_uml.errors import UserError
from fed_uml.metrics import decision_settings, task_of, tune_thresholds
from fed_uml.modality import ModalityData
from fed_uml.models import UMLModel, model_from_config
from fed_uml.results import TASKS
from fed_uml.training.loop import predict_logits

FORMAT = "fed-uml/model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: single-label files only (module docstring)
LABEL_SEPARATOR = ";"  # between the labels of a multi-label prediction (no class name holds it)
_NOT_HASHED = ("digest", "state_dict", "band_mean", "band_std")


class ModelFileError(UserError, ValueError):
    """A model file cannot be used; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def model_filename(modality: str) -> str:
    """The model file's name for `modality`."""
    return f"model-{modality}.pt"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 over the metadata (canonical JSON) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(_json({k: v for k, v in payload.items() if k not in _NOT_HASHED}).encode())
    tensors = {"band_mean": payload["band_mean"], "band_std": payload["band_std"]}
    tensors.update({f"state_dict.{k}": v for k, v in payload["state_dict"].items()})
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} is not a tensor")
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _architecture(h: CalibratedModel, num_classes: int, model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in ("backbone", "specific_layers", "projection_init")}
    return {
        "backbone": str(model_cfg["backbone"]),
        # counted on the network itself: the compared methods make every stage specific
        "specific_layers": len(h.projection),
        "projection_init": str(model_cfg.get("projection_init", "aligned")),
        "in_channels": int(h.projection.in_channels),
        "num_classes": int(num_classes),
        "kwargs": kwargs,
    }


def save_model(path: str | Path, h: CalibratedModel, data: ModalityData, cfg: Mapping[str, Any], *,
               calibrated: bool = True, institution: str | None = None, federated: bool = False) -> Path:
    """Write h_k with everything needed to use it on new imagery; atomic (temp file, rename).

    `data` is the modality it was trained on: its bands, class names, image size and the
    normalisation statistics in `data.info["band_mean"]` / `["band_std"]`.
    """
    path = Path(path)
    info = data.info or {}
    if "band_mean" not in info or "band_std" not in info:
        raise ValueError(f"modality {data.name!r}: no normalisation statistics (info['band_mean'/'band_std']) "
                         "to write with the model")
    mean = torch.as_tensor(info["band_mean"], dtype=torch.float32).clone()
    std = torch.as_tensor(info["band_std"], dtype=torch.float32).clone()
    bands = [str(b) for b in data.band_names] or [f"band{i}" for i in range(data.channels)]
    image_size = [int(s) for s in data.train.images.shape[-2:]]
    task = task_of(data.train.labels)
    thresholds, chosen = _decision_thresholds(h, data, cfg) if task == "multi_label" else (None, None)
    settings = _json(cfg)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fed_uml_version": __version__,
        "modality": str(h.modality),
        "bands": bands,
        "band_mean": mean,
        "band_std": std,
        "image_size": image_size,
        "native_size": [int(s) for s in info["native_size"]] if info.get("native_size") else image_size,
        "class_names": [str(c) for c in data.class_names],
        "task": task,
        "thresholds": thresholds,
        "thresholds_chosen": chosen,
        "architecture": _architecture(h, data.num_classes, cfg["model"]),
        "calibrated": bool(calibrated),
        "source": {
            "dataset": str(cfg.get("dataset", {}).get("name", "")),
            "reader": info.get("reader"),
            "sensor": info.get("sensor"),
            "method": str(cfg.get("method", {}).get("name", "")),
            "federated": bool(federated),
            "institution": institution,
            "seed": int(cfg.get("seed", 0) or 0),
        },
        "settings": settings,
        "settings_digest": _sha256(settings),
        "state_dict": {k: v.detach().cpu().clone() for k, v in h.state_dict().items()},
    }
    _check_consistent(path, payload)
    return _write_payload(path, payload)


def _decision_thresholds(h: CalibratedModel, data: ModalityData, cfg: Mapping[str, Any]) -> tuple[list[float], str]:
    """The per-class thresholds of a multi-label model (setting `decision`) and how they were chosen.

    Tuned on the deployed model's scores on its own training data (`data.train`, normalised).
    """
    decision = decision_settings(cfg)
    if decision.thresholds == "fixed":
        return [decision.threshold] * data.num_classes, "fixed"
    device = str(next(h.parameters()).device)
    scores = torch.sigmoid(predict_logits(h, data.train.images, device=device))
    return tune_thresholds(scores, data.train.labels, default=decision.threshold), "tuned"


def save_deployed_models(results_dir: str | Path, model: UMLModel, calibrated: Mapping[str, CalibratedModel],
                         data: Mapping[str, ModalityData], cfg: Mapping[str, Any], use_calibrated: bool) -> list[Path]:
    """A centralized run's deployed models, `results_dir/model-<modality>.pt` each.

    The calibrated h_k where the method deploys it, else the model as trained (its projection and
    backbone).
    """
    out = []
    for k, d in data.items():
        h = calibrated[k] if use_calibrated else deployed_as_trained(model, k)
        out.append(save_model(Path(results_dir) / model_filename(k), h, d, cfg, calibrated=use_calibrated))
    return out


def deployed_as_trained(model: UMLModel, modality: str) -> CalibratedModel:
    """The model g o f_k with the training-time BN statistics (copies; `model` is not touched)."""
    return CalibratedModel(modality, copy.deepcopy(model.projection(modality)), copy.deepcopy(model.backbone))


# ------------------------------------------------------------------------------ loading


@dataclass
class SavedModel:
    """A loaded model file: the network (eval mode) and what it needs from its inputs."""

    path: Path
    model: CalibratedModel
    modality: str
    bands: tuple[str, ...]
    band_mean: torch.Tensor
    band_std: torch.Tensor
    image_size: tuple[int, ...]  # (H, W)
    class_names: tuple[str, ...]
    calibrated: bool
    source: dict[str, Any]
    fed_uml_version: str
    settings_digest: str
    digest: str
    task: str = "single_label"
    thresholds: tuple[float, ...] | None = None  # multi-label: one per class
    native_size: tuple[int, ...] | None = None  # (H, W); None: image_size

    @property
    def channels(self) -> int:
        """Number of bands."""
        return len(self.bands)

    @property
    def input_size(self) -> tuple[int, ...]:
        """The patch size the model's data set delivered (inputs of another size need resampling)."""
        return self.native_size or self.image_size

    @property
    def multi_label(self) -> bool:
        """Whether the model is multi-label (sigmoid per class, thresholds) rather than single-label."""
        return self.task == "multi_label"

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in physical units -> what the network was trained on."""
        from fed_uml.data.normalize import normalize

        return normalize(images.float(), self.band_mean, self.band_std)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Logits of `images` (physical units unless `normalized`), on the model's device, returned on the CPU."""
        device = next(self.model.parameters()).device
        x = images if normalized else self.normalize(images)
        return self.model(x.to(device)).cpu()

    def probabilities(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Multi-label: each class's sigmoid score; single-label: the softmax over the classes."""
        logits = self.logits(images, normalized)
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    def predicted(self, probabilities: torch.Tensor) -> list[tuple[int, ...]]:
        """The predicted class indices of every row of `probabilities` (N, C).

        The argmax alone (single-label), or every class whose score reaches its threshold
        (multi-label, maybe none).
        """
        if not self.multi_label:
            return [(int(i),) for i in probabilities.argmax(1)]
        hits = probabilities >= torch.tensor(self.thresholds, dtype=probabilities.dtype)
        return [tuple(int(i) for i in torch.nonzero(row).flatten()) for row in hits]


def _check_consistent(path: Path, p: Mapping[str, Any]) -> None:
    arch, bands = p["architecture"], list(p["bands"])
    c = int(arch["in_channels"])
    if len(bands) != c or len(set(bands)) != len(bands):
        raise ModelFileError(path, f"bands {bands} do not fit the network's {c} input channel(s)")
    for key in ("band_mean", "band_std"):
        if tuple(p[key].shape) != (c,):
            raise ModelFileError(path, f"{key} has shape {tuple(p[key].shape)}, expected ({c},) for bands {bands}")
    if not bool((p["band_std"] > 0).all()):
        raise ModelFileError(path, "band_std has a value <= 0")
    classes = list(p["class_names"])
    if len(classes) != int(arch["num_classes"]):
        raise ModelFileError(path, f"{len(classes)} class names for {arch['num_classes']} classes")
    if len(set(classes)) != len(classes):
        raise ModelFileError(path, f"class names {classes} name a class twice")
    for key in ("image_size", "native_size"):
        size = p.get(key)
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)):
            raise ModelFileError(path, f"{key} {size!r} is not [height, width] in pixels (two positive integers)")
    _check_task(path, p)


def _check_task(path: Path, p: Mapping[str, Any]) -> None:
    task, thresholds, classes = p.get("task"), p.get("thresholds"), list(p["class_names"])
    if task not in TASKS:
        raise ModelFileError(path, f"task {task!r} is not one of {TASKS}")
    if task == "single_label":
        if thresholds is not None:
            raise ModelFileError(path, "a single-label model (argmax) with decision thresholds")
        return
    if not (isinstance(thresholds, (list, tuple)) and len(thresholds) == len(classes)
            and all(isinstance(t, float) and 0 <= t <= 1 for t in thresholds)):
        # [0, 1]: a tuned threshold may be a saturated score (0.0: always predicted)
        raise ModelFileError(path, f"a multi-label model needs one decision threshold in [0, 1] per class "
                                   f"({len(classes)}), got {thresholds!r}")
    clashing = [c for c in classes if LABEL_SEPARATOR in c]
    if clashing:
        raise ModelFileError(path, f"class names {clashing} hold {LABEL_SEPARATOR!r}, which separates the "
                                   "labels of a multi-label prediction")


def _check_against_settings(path: Path, p: Mapping[str, Any]) -> None:
    """The fields that say what the model takes must agree with the settings recorded with it.

    A file edited with its digest recomputed passes the digest; an edit of one field (the
    bands swapped, another image size) then contradicts the settings, which the loader of
    the data set would have read the same way (`fed_uml.data.catalog.modality_bands`). Only
    a consistent edit of both, with both digests recomputed, gets past this: see the module
    docstring.
    """
    try:
        dataset = json.loads(p["settings"]).get("dataset") or {}
    except (ValueError, AttributeError):
        raise ModelFileError(path, "the recorded settings are not a JSON object") from None
    if not isinstance(dataset, Mapping):
        return
    modality, bands, source = p["modality"], list(p["bands"]), p.get("source") or {}
    sensors = dataset.get("sensors")
    if isinstance(sensors, Mapping) and sensors and modality not in sensors:
        raise ModelFileError(path, f"modality {modality!r} is not one its recorded settings define "
                                   f"(dataset.sensors: {sorted(sensors)})")
    expected = modality_bands(dataset, modality)
    if expected is not None and list(expected) != bands:
        raise ModelFileError(path, f"bands {', '.join(bands)} are not the bands its recorded settings select "
                                   f"for modality {modality!r} ({', '.join(expected)}, in this order): the "
                                   "file was edited and its digest recomputed, or is not what it claims")
    spec = sensors.get(modality) if isinstance(sensors, Mapping) else None
    if isinstance(spec, Mapping) and source.get("sensor") and spec.get("sensor") not in (None, source["sensor"]):
        raise ModelFileError(path, f"source sensor {source['sensor']!r} is not the recorded settings' "
                                   f"dataset.sensors.{modality}.sensor {spec['sensor']!r}")
    size = dataset.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and list(p["image_size"]) != [size, size]:
        raise ModelFileError(path, f"image_size {list(p['image_size'])} is not the recorded settings' "
                                   f"dataset.image_size {size}")


def load_model(path: str | Path, *, modality: str | None = None, bands: Sequence[str] | None = None,
               device: str | torch.device = "cpu") -> SavedModel:
    """Read a model file written by `save_model` (only tensors and plain data: `weights_only=True`).

    `modality` / `bands`: what the caller expects; a file for another modality or other bands
    (names or order) is refused.
    """
    path = Path(path)
    p = _verified(path, _read_payload(path))
    if p["format_version"] == 1:
        task = _version1_task(p)
        if task != "single_label":
            raise ModelFileError(path, f"a version-1 model file of a {task} model: version 1 does not record the "
                                       "task, and this fed-uml serves multi-label models with per-class "
                                       "sigmoid scores and thresholds. Rewrite it as version 2 (thresholds 0.5): "
                                       f"python -m experiments.predict {path} --upgrade NEW.pt; or re-run the "
                                       "training")
        p = {**p, "task": task, "thresholds": None, "native_size": list(p["image_size"])}
    _check_consistent(path, p)
    _check_against_settings(path, p)
    file_bands = tuple(p["bands"])
    if modality is not None and modality != p["modality"]:
        raise ModelFileError(path, f"a model for modality {p['modality']!r} (bands {', '.join(file_bands)}), "
                                   f"not {modality!r}")
    if bands is not None and tuple(bands) != file_bands:
        raise ModelFileError(path, f"the model takes bands {', '.join(file_bands)} (in this order), not "
                                   f"{', '.join(bands)}")
    arch = p["architecture"]
    try:
        model_cfg = {"backbone": arch["backbone"], "projection_init": arch.get("projection_init", "aligned"),
                     **dict(arch.get("kwargs") or {})}
        net = model_from_config(model_cfg, {p["modality"]: int(arch["in_channels"])}, int(arch["num_classes"]),
                                specific_layers=int(arch["specific_layers"]))
        h = CalibratedModel(p["modality"], net.projection(p["modality"]), net.backbone)
        h.load_state_dict(p["state_dict"], strict=True)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise ModelFileError(path, f"the weights do not fit the architecture {arch}: "
                                   f"{str(e).splitlines()[0]}") from None
    h.to(device).eval()
    return SavedModel(
        path=path, model=h, modality=str(p["modality"]), bands=file_bands, band_mean=p["band_mean"].float(),
        band_std=p["band_std"].float(), image_size=tuple(int(s) for s in p["image_size"]),
        class_names=tuple(p["class_names"]), calibrated=bool(p.get("calibrated", True)),
        source=dict(p.get("source") or {}), fed_uml_version=str(p.get("fed_uml_version")),
        settings_digest=str(p["settings_digest"]), digest=str(p["digest"]), task=str(p["task"]),
        thresholds=None if p["thresholds"] is None else tuple(float(t) for t in p["thresholds"]),
        native_size=tuple(int(n) for n in p["native_size"]),
    )


def _verified(path: Path, p: Mapping[str, Any]) -> Mapping[str, Any]:
    """A payload of a readable format version whose digests fit its contents (else refused)."""
    version = p.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(path, f"model file format version {version!r} (written by fed-uml "
                                   f"{p.get('fed_uml_version')}); this fed-uml {__version__} reads versions "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}")
    required: tuple[str, ...] = ("modality", "bands", "band_mean", "band_std", "image_size", "class_names",
                                 "architecture", "state_dict", "settings", "settings_digest", "digest")
    if version >= 2:
        required += ("task", "thresholds", "native_size")
    missing = [k for k in required if k not in p]
    if missing:
        raise ModelFileError(path, f"incomplete model file: missing {missing}")
    try:
        digest = _digest(p)
    except (TypeError, KeyError, AttributeError) as e:
        raise ModelFileError(path, f"malformed model file: {e}") from None
    if digest != p["digest"]:
        raise ModelFileError(path, "digest mismatch: the contents do not match the digest written with them "
                                   "(the file was modified after it was written, or is corrupt)")
    if _sha256(p["settings"]) != p["settings_digest"]:
        raise ModelFileError(path, "settings digest mismatch: the recorded settings were modified")
    return p


def _version1_task(p: Mapping[str, Any]) -> str:
    """The task a version-1 file's model was trained for.

    Its settings' dataset.task; none recorded means single-label (multi-label training came with
    that setting).
    """
    try:
        dataset = json.loads(p["settings"]).get("dataset") or {}
        return str(dataset.get("task") or "single_label")
    except (ValueError, AttributeError):
        return "unknown"


def _read_payload(path: Path) -> dict[str, Any]:
    """The payload of a fed-uml model file (plain tensors and data only), or a ModelFileError."""
    if not path.is_file():
        raise ModelFileError(path, "model file not found")
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise ModelFileError(path, f"not a readable fed-uml model file ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(p, dict) or p.get("format") != FORMAT:
        hint = " (it looks like a state dict: backbone.pt and checkpoint.pt are not model files)" \
            if isinstance(p, dict) and p and "format" not in p else ""
        raise ModelFileError(path, f"not a fed-uml model file: no format={FORMAT!r}{hint}")
    return p


def _write_payload(path: Path, payload: dict[str, Any]) -> Path:
    """`payload` with its digest, written atomically (temp file, rename)."""
    payload["digest"] = _digest(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def upgrade_model_file(path: str | Path, out: str | Path) -> Path:
    """Rewrite a version-1 model file as version 2 at `out`.

    The task its recorded settings name (none: single-label), multi-label thresholds 0.5 (fixed: no
    training data is at hand to tune them), the native size taken to be its image size. The weights,
    settings and every other field are kept; the digest is recomputed over the new contents.
    """
    path, out = Path(path), Path(out)
    p = _verified(path, _read_payload(path))
    if p["format_version"] != 1:
        raise ModelFileError(path, f"already format version {p['format_version']}: nothing to upgrade")
    if out.resolve() == path.resolve():
        raise ModelFileError(out, "the upgraded file must not replace the original: give another path")
    task = _version1_task(p)
    if task not in TASKS:
        raise ModelFileError(path, f"its recorded settings name no known task ({task!r}); re-run the training")
    multi = task == "multi_label"
    payload = {**p, "format_version": FORMAT_VERSION, "task": task,
               "thresholds": [0.5] * len(p["class_names"]) if multi else None,
               "thresholds_chosen": "fixed" if multi else None, "native_size": list(p["image_size"])}
    payload.pop("digest")
    _check_consistent(out, payload)
    return _write_payload(out, payload)


# ------------------------------------------------------------------------------ serving


class ServingModel(nn.Module):
    """Raw bands in physical units (N, C, H, W) -> logits: normalisation, then h_k."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, saved: SavedModel):
        super().__init__()
        h = copy.deepcopy(saved.model).cpu()
        self.projection, self.backbone = h.projection, h.backbone
        self.register_buffer("mean", saved.band_mean.view(1, -1, 1, 1).clone())
        self.register_buffer("std", saved.band_std.view(1, -1, 1, 1).clone())
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of `x` in physical units: normalisation, projection, backbone."""
        return self.backbone(self.projection((x - self.mean) / self.std))


SERVING_METADATA = "fed_uml_model.json"


def serving_metadata(saved: SavedModel) -> dict[str, Any]:
    """What the exported program takes and gives, saved beside it for a server that knows nothing of fed-uml."""
    return {
        "input": f"float32 (N, {saved.channels}, {saved.image_size[0]}, {saved.image_size[1]}), bands "
                 f"{list(saved.bands)} in physical units (normalisation is inside the program)",
        "output": ("logits (N, classes); the sigmoid of each gives that class's probability; class c is "
                   "predicted where it is >= thresholds[c] (several classes, or none, per input)"
                   if saved.multi_label else
                   "logits (N, classes); softmax gives the class probabilities, the argmax the predicted class"),
        "task": saved.task,
        "thresholds": None if saved.thresholds is None else list(saved.thresholds),
        "modality": saved.modality,
        "bands": list(saved.bands),
        "image_size": list(saved.image_size),
        "class_names": list(saved.class_names),
        "fed_uml_version": saved.fed_uml_version,
        "digest": saved.digest,
    }


def export_program(saved: SavedModel, path: str | Path) -> Path:
    """Write a `torch.export` program of normalisation + h_k that PyTorch alone serves.

    Any batch size, the model's image size: `torch.export.load(path).module()(x)`; the metadata
    (bands, class names, ...) travels in its extra file `fed_uml_model.json`.
    """
    path = Path(path)
    module = ServingModel(saved)
    example = torch.zeros(2, saved.channels, *saved.image_size)
    program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={SERVING_METADATA: json.dumps(serving_metadata(saved), indent=1)})
    return path
