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
    class_names       the label set, in the order of the logits
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
does not fit the contents (an edited or corrupt file), bands that disagree with the network
or with the bands the caller expects, and weights that do not fit the architecture.
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

import torch
from torch import nn

from fed_uml import __version__
from fed_uml.calibration import CalibratedModel
from fed_uml.errors import UserError
from fed_uml.modality import ModalityData
from fed_uml.models import UMLModel, model_from_config

FORMAT = "fed-uml/model"
FORMAT_VERSION = 1
_NOT_HASHED = ("digest", "state_dict", "band_mean", "band_std")


class ModelFileError(UserError, ValueError):
    """A model file cannot be used; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def model_filename(modality: str) -> str:
    return f"model-{modality}.pt"


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(payload: Mapping) -> str:
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


def _architecture(h: CalibratedModel, num_classes: int, model_cfg: Mapping) -> dict:
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


def save_model(path: str | Path, h: CalibratedModel, data: ModalityData, cfg: Mapping, *, calibrated: bool = True,
               institution: str | None = None, federated: bool = False) -> Path:
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
    settings = _json(cfg)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fed_uml_version": __version__,
        "modality": str(h.modality),
        "bands": bands,
        "band_mean": mean,
        "band_std": std,
        "image_size": [int(s) for s in data.train.images.shape[-2:]],
        "class_names": [str(c) for c in data.class_names],
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
    payload["digest"] = _digest(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_deployed_models(results_dir: str | Path, model: UMLModel, calibrated: Mapping[str, CalibratedModel],
                         data: Mapping[str, ModalityData], cfg: Mapping, use_calibrated: bool) -> list[Path]:
    """A centralized run's deployed models, `results_dir/model-<modality>.pt` each: the calibrated
    h_k where the method deploys it, else the model as trained (its projection and backbone)."""
    out = []
    for k, d in data.items():
        h = calibrated[k] if use_calibrated else deployed_as_trained(model, k)
        out.append(save_model(Path(results_dir) / model_filename(k), h, d, cfg, calibrated=use_calibrated))
    return out


def deployed_as_trained(model: UMLModel, modality: str) -> CalibratedModel:
    """g o f_k with the training-time BN statistics (copies; `model` is not touched)."""
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
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    calibrated: bool
    source: dict
    fed_uml_version: str
    settings_digest: str
    digest: str

    @property
    def channels(self) -> int:
        return len(self.bands)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in physical units -> what the network was trained on."""
        from fed_uml.data.normalize import normalize

        return normalize(images.float(), self.band_mean, self.band_std)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        device = next(self.model.parameters()).device
        x = images if normalized else self.normalize(images)
        return self.model(x.to(device)).cpu()

    def probabilities(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        return torch.softmax(self.logits(images, normalized), dim=1)


def _check_consistent(path: Path, p: Mapping) -> None:
    arch, bands = p["architecture"], list(p["bands"])
    c = int(arch["in_channels"])
    if len(bands) != c or len(set(bands)) != len(bands):
        raise ModelFileError(path, f"bands {bands} do not fit the network's {c} input channel(s)")
    for key in ("band_mean", "band_std"):
        if tuple(p[key].shape) != (c,):
            raise ModelFileError(path, f"{key} has shape {tuple(p[key].shape)}, expected ({c},) for bands {bands}")
    if not bool((p["band_std"] > 0).all()):
        raise ModelFileError(path, "band_std has a value <= 0")
    if len(p["class_names"]) != int(arch["num_classes"]):
        raise ModelFileError(path, f"{len(p['class_names'])} class names for {arch['num_classes']} classes")


def load_model(path: str | Path, *, modality: str | None = None, bands: Sequence[str] | None = None,
               device: str | torch.device = "cpu") -> SavedModel:
    """Read a model file written by `save_model` (only tensors and plain data: `weights_only=True`).

    `modality` / `bands`: what the caller expects; a file for another modality or other bands
    (names or order) is refused.
    """
    path = Path(path)
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
    version = p.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(path, f"model file format version {version!r} (written by fed-uml "
                                   f"{p.get('fed_uml_version')}); this fed-uml {__version__} reads version "
                                   f"{FORMAT_VERSION} only")
    required = ("modality", "bands", "band_mean", "band_std", "image_size", "class_names", "architecture",
                "state_dict", "settings", "settings_digest", "digest")
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
    _check_consistent(path, p)
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
        settings_digest=str(p["settings_digest"]), digest=str(p["digest"]),
    )


# ------------------------------------------------------------------------------ serving


class ServingModel(nn.Module):
    """Raw bands in physical units (N, C, H, W) -> logits: normalisation, then h_k."""

    def __init__(self, saved: SavedModel):
        super().__init__()
        h = copy.deepcopy(saved.model).cpu()
        self.projection, self.backbone = h.projection, h.backbone
        self.register_buffer("mean", saved.band_mean.view(1, -1, 1, 1).clone())
        self.register_buffer("std", saved.band_std.view(1, -1, 1, 1).clone())
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.projection((x - self.mean) / self.std))


SERVING_METADATA = "fed_uml_model.json"


def serving_metadata(saved: SavedModel) -> dict:
    return {
        "input": f"float32 (N, {saved.channels}, {saved.image_size[0]}, {saved.image_size[1]}), bands "
                 f"{list(saved.bands)} in physical units (normalisation is inside the program)",
        "output": "logits (N, classes); softmax gives the class probabilities",
        "modality": saved.modality,
        "bands": list(saved.bands),
        "image_size": list(saved.image_size),
        "class_names": list(saved.class_names),
        "fed_uml_version": saved.fed_uml_version,
        "digest": saved.digest,
    }


def export_program(saved: SavedModel, path: str | Path) -> Path:
    """Write a `torch.export` program of normalisation + h_k (any batch size, the model's image
    size) that PyTorch alone serves: `torch.export.load(path).module()(x)`; the metadata
    (bands, class names, ...) travels in its extra file `fed_uml_model.json`."""
    path = Path(path)
    module = ServingModel(saved)
    example = torch.zeros(2, saved.channels, *saved.image_size)
    program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={SERVING_METADATA: json.dumps(serving_metadata(saved), indent=1)})
    return path
