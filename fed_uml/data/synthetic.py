"""The `synthetic` data set: embedded sensors, land-cover scenes seen by optical and SAR instruments.

Why: the project needs data that runs anywhere, in seconds, with no download, and that
behaves like real Sentinel-1/Sentinel-2 pairs closely enough for the UML question to be
asked of it: is a weak sensor helped by sharing a backbone with a strong one?

Scene model
    Every sample is a square scene of `image_size` pixels (think 10 m pixels, as in
    Sentinel-2's 10 m bands). A scene is first drawn as a *material map*: each pixel holds
    one of nine materials (water, forest, grass, crop, bare soil, asphalt, roof, concrete,
    shrub). The class of a scene is defined only by its spatial layout, as in EuroSAT:

    ============================  ==========================================================
    AnnualCrop                    rectangular parcels of crop, bare soil and grass
    Forest                        closed canopy with a few clearings
    HerbaceousVegetation          irregular patches of grass, shrub and bare soil
    Highway                       one or two straight asphalt roads across fields or grass
    Industrial                    large roof and concrete blocks on asphalt lots
    Pasture                       grass with a few isolated trees
    PermanentCrop                 orchards: regular lattices of tree crowns on soil or grass
    Residential                   a street grid with small houses and gardens
    River                         a meandering water channel through vegetation
    SeaLake                       open water with a noisy shoreline
    ============================  ==========================================================

Optical sensor (Sentinel-2 MSI, 13 bands in EuroSAT's order B01..B12, B8A)
    Each material has a top-of-atmosphere reflectance signature per band (typical values for
    clear water, broadleaf canopy, grassland, green crop, dry soil, asphalt, tile roof,
    concrete and shrub, with the red edge and NIR plateau of vegetation). Per scene: a
    multiplicative illumination gain (+-15 %), an additive haze that decays with
    wavelength, scene conditions (`scene_variability`: phenology from green to senescent
    vegetation, harvested fields, soil moisture darkening soil, sediment in water, and tile,
    grey or metal roofs), per-material spectral variability (`optical_material_jitter`,
    relative), a smooth sub-material texture, and additive Gaussian sensor noise
    (`optical_noise`, in reflectance units). Output: digital numbers, reflectance x 10000, as EuroSAT's GeoTIFFs.
    Any band subset can be a modality (e.g. RGB = B04, B03, B02).

SAR sensor (Sentinel-1 IW GRD, VV and VH)
    Each material has a mean backscatter sigma0 in dB per polarisation (smooth water very
    dark, volume scattering of forest bright in VH, double bounce of buildings very bright,
    smooth asphalt dark; grass, crop and soil close together, as in real C-band data). Per
    scene: a calibration and incidence-angle offset (`sar_scene_offset_db`), scene
    conditions (`scene_variability`: soil moisture raising the backscatter of soil and low
    vegetation by up to 3 dB, wind roughening water by up to 8 dB, crop stage, and the
    orientation of buildings changing their double bounce), per-material variability
    (`sar_material_jitter_db`), and a smooth texture. Speckle is multiplicative, drawn per
    pixel and polarisation from a unit-mean Gamma distribution with `sar_looks` equivalent
    looks (fully developed speckle in multi-looked intensity). Output: backscatter in dB, as BigEarthNet-S1's GeoTIFFs.

Why SAR is the weaker modality here, as with real sensors: two backscatter channels
separate fewer materials than thirteen spectral bands, and speckle (about 2 dB per pixel at
4 looks) hides fine structure such as orchard lattices, narrow roads and house grids.
Nothing in the generator knows about UML: each modality draws its own scenes from the same
class-conditional layout distribution (unpaired by construction), and each sensor model
only uses published physics of that sensor.

Determinism: a sample is a function of (seed, modality name, split, index) only.

As a data set (registered as ``synthetic``, settings in conf/dataset/synthetic.yaml on the schema
    `fed_uml.schema.SyntheticDatasetSettings`)
    `load_synthetic` renders `samples_per_class` training and `test_samples_per_class` test
    scenes of every class for each modality in `dataset.modalities`, each modality a sensor
    (``optical`` or ``sar``) and a band subset (`dataset.sensors`), in physical units. The
    class names are EuroSAT's (`fed_uml.data.eurosat.CLASSES`), the optical band names
    EuroSAT MS's, so a model can be compared across the synthetic and the real data.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fed_uml.data.eurosat import CLASSES, MS_BANDS
from fed_uml.data.memory import check_fits
from fed_uml.data.settings import per_modality, selected_modalities
from fed_uml.modality import ArrayDataset, ModalityData
from fed_uml.schema.datasets import SensorNoise  # the `dataset.noise` settings

WATER, FOREST, GRASS, CROP, SOIL, ASPHALT, ROOF, CONCRETE, SHRUB = range(9)
MATERIALS = ("water", "forest", "grass", "crop", "soil", "asphalt", "roof", "concrete", "shrub")

S2_BANDS = MS_BANDS  # EuroSAT's order
S1_BANDS = ("VV", "VH")

# Top-of-atmosphere reflectance per material (rows, MATERIALS order) and band (S2_BANDS order).
_REFLECTANCE = np.array(
    [
        [0.090, 0.075, 0.060, 0.040, 0.032, 0.024, 0.022, 0.018, 0.010, 0.002, 0.010, 0.006, 0.016],
        [0.045, 0.035, 0.050, 0.030, 0.075, 0.230, 0.280, 0.300, 0.100, 0.004, 0.140, 0.065, 0.310],
        [0.055, 0.050, 0.080, 0.060, 0.120, 0.270, 0.320, 0.350, 0.120, 0.005, 0.240, 0.130, 0.360],
        [0.055, 0.048, 0.085, 0.050, 0.135, 0.330, 0.400, 0.430, 0.140, 0.005, 0.210, 0.105, 0.440],
        [0.085, 0.090, 0.120, 0.160, 0.190, 0.210, 0.230, 0.250, 0.110, 0.007, 0.330, 0.270, 0.260],
        [0.085, 0.080, 0.090, 0.100, 0.110, 0.115, 0.120, 0.125, 0.060, 0.004, 0.130, 0.120, 0.125],
        [0.100, 0.095, 0.110, 0.170, 0.180, 0.185, 0.190, 0.200, 0.090, 0.006, 0.230, 0.200, 0.200],
        [0.180, 0.190, 0.220, 0.240, 0.255, 0.265, 0.275, 0.285, 0.140, 0.009, 0.310, 0.270, 0.290],
        [0.050, 0.042, 0.062, 0.050, 0.100, 0.210, 0.250, 0.270, 0.100, 0.005, 0.220, 0.120, 0.285],
    ],
    dtype=np.float32,
)
# Mean backscatter sigma0 (dB) per material: (VV, VH).
_SIGMA0_DB = np.array(
    [
        [-20.0, -27.0],  # water: specular, dark
        [-8.0, -13.5],  # forest: volume scattering
        [-12.0, -19.0],  # grass
        [-11.0, -17.5],  # crop
        [-13.0, -21.0],  # bare soil
        [-16.0, -24.0],  # asphalt: smooth, dark
        [-3.0, -10.0],  # roof: double bounce with walls
        [-7.0, -15.0],  # concrete
        [-10.0, -16.0],  # shrub
    ],
    dtype=np.float32,
)
# Senescent (dry) vegetation: the red edge and NIR plateau collapse, red and SWIR rise.
_SENESCENT = np.array([0.06, 0.06, 0.09, 0.11, 0.14, 0.18, 0.20, 0.22, 0.10, 0.005, 0.28, 0.20, 0.22], np.float32)
_VEGETATION = (FOREST, GRASS, CROP, SHRUB)
# Haze adds most to the short wavelengths.
_HAZE_SHAPE = np.array([1.0, 0.9, 0.7, 0.55, 0.45, 0.35, 0.3, 0.25, 0.2, 0.05, 0.08, 0.05, 0.22], np.float32)


def _optical_table(rng: np.random.Generator, v: float) -> np.ndarray:
    """Per-scene reflectance of every material.

    Season, harvest, soil moisture, turbidity and roof type vary from scene to scene (scaled by
    `scene_variability` v).
    """
    refl = _REFLECTANCE.copy()
    green = 1.0 - v * rng.uniform(0.0, 0.7)  # phenology: 1 = peak greenness
    for m in _VEGETATION:
        g = 1.0 - (1.0 - green) * (0.4 if m == FOREST else 1.0)  # conifers keep their needles
        refl[m] = g * _REFLECTANCE[m] + (1.0 - g) * _SENESCENT
    if rng.random() < 0.3 * v:  # harvested fields: stubble over soil
        refl[CROP] = 0.5 * _REFLECTANCE[SOIL] + 0.5 * _SENESCENT
    refl[SOIL] *= 1.0 - v * 0.35 * rng.uniform()  # wet soil is darker
    refl[WATER, 1:5] += v * 0.03 * rng.uniform()  # suspended sediment
    roof = rng.integers(3) if v > 0 else 0  # tile, grey concrete, bright metal
    refl[ROOF] = (_REFLECTANCE[ROOF], 0.75 * _REFLECTANCE[CONCRETE], 1.4 * _REFLECTANCE[CONCRETE])[roof]
    return refl


def _sar_table(rng: np.random.Generator, v: float) -> np.ndarray:
    """Per-scene sigma0 of every material.

    Soil moisture, wind on water, crop stage and the orientation of buildings towards the radar vary
    from scene to scene.
    """
    db = _SIGMA0_DB.copy()
    moisture = v * rng.uniform()
    for m in (SOIL, GRASS, CROP, SHRUB):
        db[m] += (3.0 * moisture, 2.5 * moisture)
    db[WATER] += v * 8.0 * rng.uniform() ** 2  # wind-roughened water is brighter
    db[CROP] += v * rng.uniform(-2.0, 2.0)
    db[ROOF] += v * rng.uniform(-4.0, 2.0)  # double bounce depends on orientation
    return db


@dataclass(frozen=True)
class ModalitySpec:
    """A synthetic modality: which sensor sees the scene, and which of its bands are kept."""

    sensor: str
    bands: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any] | None) -> ModalitySpec:
        """Read synthetic modality `name`'s settings `spec` (sensor and bands)."""
        spec = dict(spec or {})
        sensor = spec.get("sensor", "sar" if name in ("sar", "s1") else "optical")
        if sensor not in ("optical", "sar"):
            raise ValueError(f"synthetic modality {name!r}: sensor must be 'optical' or 'sar', got {sensor!r}")
        allowed = S2_BANDS if sensor == "optical" else S1_BANDS
        default = {"rgb": ("B04", "B03", "B02")}.get(name, allowed)
        bands = tuple(spec.get("bands") or default)
        unknown = [b for b in bands if b not in allowed]
        if unknown or not bands:
            raise ValueError(
                f"synthetic modality {name!r}: unknown bands {unknown} for the {sensor} sensor; "
                f"choose from {list(allowed)}"
            )
        return cls(sensor, bands)


class _Grid:
    """Pixel-centre coordinates of a square scene, cached per size."""

    def __init__(self, size: int):
        c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        self.y, self.x = np.meshgrid(c, c, indexing="ij")
        self.size = size

    def rotated(self, theta: float, shift: Sequence[float] | np.ndarray = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(theta), np.sin(theta)
        u = c * self.x + s * self.y + shift[0]
        v = -s * self.x + c * self.y + shift[1]
        return u, v

    def smooth_noise(self, rng: np.random.Generator, scale: float, n: int = 6) -> np.ndarray:
        """A zero-mean, unit-variance random field with features about `scale` wide."""
        theta = rng.uniform(0, np.pi, (n, 1, 1))
        freq = rng.uniform(0.6, 1.4, (n, 1, 1)) / scale
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        arg = (2 * np.pi) * freq * (np.cos(theta) * self.x + np.sin(theta) * self.y) + phase
        return np.cos(arg, dtype=np.float32).sum(axis=0) * np.float32(np.sqrt(2.0 / n))


def _vegetation(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """A rural background: grass with patches of crop, shrub and forest."""
    m = np.full(grid.x.shape, GRASS, np.int8)
    n1, n2 = grid.smooth_noise(rng, 0.25), grid.smooth_noise(rng, 0.2)
    m[n1 > 0.5] = CROP
    m[n2 > 0.9] = FOREST
    m[(n1 < -0.9)] = SHRUB
    return m


def _annual_crop(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    u, v = grid.rotated(rng.uniform(0, np.pi), rng.uniform(-1, 1, 2))
    wu, wv = rng.uniform(0.12, 0.3), rng.uniform(0.25, 0.6)
    table = rng.choice([CROP, SOIL, GRASS], p=[0.5, 0.3, 0.2], size=(32, 32)).astype(np.int8)
    i = np.floor(u / wu).astype(int) % 32
    j = np.floor(v / wv).astype(int) % 32
    return table[i, j]


def _forest(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    m = np.full(grid.x.shape, FOREST, np.int8)
    gaps = grid.smooth_noise(rng, 0.15) > rng.uniform(1.1, 1.7)
    m[gaps] = rng.choice([GRASS, SHRUB])
    return m


def _herbaceous(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    n1, n2 = grid.smooth_noise(rng, 0.12), grid.smooth_noise(rng, 0.2)
    m = np.full(grid.x.shape, GRASS, np.int8)
    m[n1 > 0.3] = SHRUB
    m[n1 < -1.0] = SOIL
    m[n2 > 1.5] = FOREST
    return m


def _highway(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    m = _annual_crop(grid, rng) if rng.random() < 0.5 else _vegetation(grid, rng)
    u, v = grid.rotated(rng.uniform(0, np.pi))
    m[np.abs(v - rng.uniform(-0.2, 0.2)) < rng.uniform(0.025, 0.045)] = ASPHALT
    if rng.random() < 0.3:
        u2, v2 = grid.rotated(rng.uniform(0, np.pi))
        m[np.abs(v2 - rng.uniform(-0.3, 0.3)) < rng.uniform(0.015, 0.03)] = ASPHALT
    return m


def _industrial(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    theta = rng.uniform(0, np.pi / 2)
    u, v = grid.rotated(theta)
    m = np.where(grid.smooth_noise(rng, 0.3) > 0.8, GRASS, ASPHALT).astype(np.int8)
    for _ in range(rng.integers(2, 6)):
        cu, cv = rng.uniform(-0.4, 0.4, 2)
        hu, hv = rng.uniform(0.08, 0.22, 2)
        m[(np.abs(u - cu) < hu) & (np.abs(v - cv) < hv)] = rng.choice([ROOF, CONCRETE], p=[0.6, 0.4])
    return m


def _pasture(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    m = np.full(grid.x.shape, GRASS, np.int8)
    if rng.random() < 0.3:
        m[grid.smooth_noise(rng, 0.2) > 1.4] = SOIL
    for _ in range(rng.integers(1, 6)):
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        m[(grid.x - cx) ** 2 + (grid.y - cy) ** 2 < rng.uniform(0.02, 0.05) ** 2] = FOREST
    return m


def _permanent_crop(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    u, v = grid.rotated(rng.uniform(0, np.pi), rng.uniform(-1, 1, 2))
    p = rng.uniform(0.07, 0.11)
    r = p * rng.uniform(0.3, 0.42)
    du, dv = (u % p) - p / 2, (v % (p * rng.uniform(1.0, 1.6))) - p / 2
    m = np.full(grid.x.shape, rng.choice([SOIL, GRASS]), np.int8)
    m[du**2 + dv**2 < r**2] = rng.choice([SHRUB, FOREST], p=[0.6, 0.4])
    return m


def _residential(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    u, v = grid.rotated(rng.uniform(0, np.pi / 2), rng.uniform(-1, 1, 2))
    period, street = rng.uniform(0.18, 0.28), rng.uniform(0.018, 0.028)
    m = np.where(grid.smooth_noise(rng, 0.1) > 0.3, SHRUB, GRASS).astype(np.int8)
    house = period / rng.choice([2.0, 3.0])
    hu, hv = (u % house) - house / 2, (v % house) - house / 2
    m[(np.abs(hu) < house * 0.3) & (np.abs(hv) < house * 0.3)] = ROOF
    su, sv = (u % period), (v % period)
    m[(su < 2 * street) | (sv < 2 * street)] = ASPHALT
    return m


def _river(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    m = _vegetation(grid, rng)
    u, v = grid.rotated(rng.uniform(0, np.pi))
    centre = rng.uniform(-0.2, 0.2) + rng.uniform(0.05, 0.2) * np.sin(
        2 * np.pi * rng.uniform(0.5, 1.5) * u + rng.uniform(0, 2 * np.pi)
    )
    half = rng.uniform(0.03, 0.07)
    d = np.abs(v - centre)
    if rng.random() < 0.5:
        m[d < half + 0.04] = FOREST
    m[d < half] = WATER
    return m


def _sea_lake(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    land = _vegetation(grid, rng)
    if rng.random() < 0.5:  # coast
        u, _ = grid.rotated(rng.uniform(0, 2 * np.pi))
        s = u - rng.uniform(-0.25, 0.3) + 0.12 * grid.smooth_noise(rng, 0.3)
    else:  # lake
        cx, cy = rng.uniform(-0.25, 0.25, 2)
        s = np.hypot(grid.x - cx, grid.y - cy) - rng.uniform(0.3, 0.6) + 0.08 * grid.smooth_noise(rng, 0.25)
    land[np.abs(s) < 0.03] = SOIL  # beach
    land[s < 0] = WATER
    return land


_LAYOUTS = (
    _annual_crop,
    _forest,
    _herbaceous,
    _highway,
    _industrial,
    _pasture,
    _permanent_crop,
    _residential,
    _river,
    _sea_lake,
)


def draw_scene(grid: _Grid, label: int, rng: np.random.Generator) -> np.ndarray:
    """The material map (size x size, int8) of one scene of class `label`."""
    return _LAYOUTS[label](grid, rng)


def render_optical(materials: np.ndarray, grid: _Grid, rng: np.random.Generator, band_index: np.ndarray,
                   noise: SensorNoise) -> np.ndarray:
    """Top-of-atmosphere digital numbers (reflectance x 10000), shape (bands, H, W)."""
    refl = _optical_table(rng, noise.scene_variability)[:, band_index]
    jitter = 1.0 + np.float32(noise.optical_material_jitter) * rng.standard_normal(refl.shape, dtype=np.float32)
    img = (refl * jitter)[materials]  # (H, W, B)
    img *= (1.0 + 0.05 * grid.smooth_noise(rng, 0.08))[..., None]
    img *= np.float32(rng.uniform(0.85, 1.15))
    img += np.float32(rng.uniform(0.0, 0.03)) * _HAZE_SHAPE[band_index]
    img += np.float32(noise.optical_noise) * rng.standard_normal(img.shape, dtype=np.float32)
    img *= np.float32(10000.0)
    return np.maximum(img, 0.0, out=img).transpose(2, 0, 1)


def render_sar(materials: np.ndarray, grid: _Grid, rng: np.random.Generator, band_index: np.ndarray,
               noise: SensorNoise) -> np.ndarray:
    """Backscatter sigma0 in dB with multiplicative Gamma speckle, shape (bands, H, W)."""
    db = _sar_table(rng, noise.scene_variability)[:, band_index] + noise.sar_material_jitter_db * rng.standard_normal(
        (len(MATERIALS), len(band_index))
    ).astype(np.float32)
    img = db[materials] + np.float32(noise.sar_scene_offset_db * rng.standard_normal())
    img += np.float32(0.7) * grid.smooth_noise(rng, 0.1)[..., None]
    if noise.sar_looks > 0:  # speckle is multiplicative in intensity, i.e. additive in dB
        speckle = rng.standard_gamma(noise.sar_looks, img.shape, dtype=np.float32) / np.float32(noise.sar_looks)
        img += np.float32(10.0) * np.log10(np.maximum(speckle, np.float32(1e-6)))
    return img.transpose(2, 0, 1)


def _stream_seed(seed: int, modality: str, split: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(modality.encode()), zlib.crc32(split.encode())])


def generate(
    modality: str,
    spec: ModalitySpec,
    samples_per_class: int,
    split: str = "train",
    image_size: int = 32,
    noise: SensorNoise = SensorNoise(),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render `samples_per_class` scenes of every class for one modality and split.

    Returns (images float32 (N, C, H, W) in physical units, labels int64 (N,)), ordered by
    class. Scenes of different modalities or splits come from independent random streams.
    """
    if samples_per_class < 1:
        raise ValueError(f"dataset.{'test_' if split == 'test' else ''}samples_per_class must be >= 1, "
                         f"got {samples_per_class} (modality {modality!r})")
    if image_size < 8:
        raise ValueError(f"dataset.image_size must be >= 8, got {image_size}")
    grid = _Grid(image_size)
    allowed = S2_BANDS if spec.sensor == "optical" else S1_BANDS
    band_index = np.array([allowed.index(b) for b in spec.bands])
    render = render_optical if spec.sensor == "optical" else render_sar
    n = samples_per_class * len(CLASSES)
    images = np.empty((n, len(band_index), image_size, image_size), np.float32)
    labels = np.repeat(np.arange(len(CLASSES)), samples_per_class)
    streams = _stream_seed(seed, modality, split).spawn(n)
    for i, (label, ss) in enumerate(zip(labels, streams)):
        rng = np.random.default_rng(ss)
        images[i] = render(draw_scene(grid, int(label), rng), grid, rng, band_index, noise)
    return images, labels.astype(np.int64)


def load_synthetic(cfg: Mapping[str, Any]) -> dict[str, ModalityData]:
    """The `synthetic` data set (conf/dataset/synthetic.yaml).

    Every selected modality rendered for train and test, in physical units (`load_dataset`
    normalises).
    """
    sensors = dict(cfg.get("sensors") or {})
    names = selected_modalities(cfg, sensors)
    noise = SensorNoise(**dict(cfg.get("noise") or {}))
    size, seed = int(cfg.get("image_size", 32)), int(cfg.get("seed", 0))
    check_fits(sum(len(ModalitySpec.parse(m, sensors[m]).bands) * size * size * len(CLASSES)
                   * sum(int(per_modality(cfg.get(k), m, f"dataset.{k}")) for k in ("samples_per_class",
                                                                                     "test_samples_per_class"))
                   for m in names),
               f"the synthetic modalities {', '.join(names)}", "dataset.samples_per_class, "
               "dataset.test_samples_per_class or dataset.image_size")
    out = {}
    for name in names:
        spec = ModalitySpec.parse(name, sensors[name])
        splits = {}
        for split, key in (("train", "samples_per_class"), ("test", "test_samples_per_class")):
            n = int(per_modality(cfg.get(key), name, f"dataset.{key}"))
            x, y = generate(name, spec, n, split, size, noise, seed)
            splits[split] = (torch.from_numpy(x), torch.from_numpy(y))
        out[name] = ModalityData(
            name=name,
            train=ArrayDataset(*splits["train"]),
            test=ArrayDataset(*splits["test"]),
            class_names=CLASSES,
            band_names=spec.bands,
            info={"sensor": spec.sensor},
        )
    return out
