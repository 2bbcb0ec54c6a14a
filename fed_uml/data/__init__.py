"""Data: the embedded synthetic sensors and readers of real EO data sets, as modalities.

Every source ends up as `fed_uml.modality.ModalityData` (the containers live outside this
package so that training, methods and the server never need to import data readers).

Public API: `load_dataset(cfg, normalize=True)`, `available_datasets()`,
`register_dataset(name, loader)` (all in `fed_uml.data.catalog`), and
`fed_uml.data.normalize` (`band_stats`, `normalize`, `standardize`).

Layout
    catalog.py      name -> loader, `load_dataset`; the built-in data sets listed explicitly
    settings.py     reading the `dataset` config group (data root, modalities, ...)
    errors.py       the exceptions (DataError, DatasetNotFoundError, download errors)
    raster.py       GeoTIFF / JPEG decoding, checks, resampling
    scenes.py       SceneRecord and SceneDataset, the readers' base class
    download.py     `dataset.download=true`: fetch, verify, unpack
    normalize.py    per-band standardisation with training statistics
    splits.py       the unpaired deal, per-class subsets, the single-label rule
    eurosat.py, eurosat_sar.py, bigearthnet.py, bigearthnet_v2.py, sen12ms.py
                    one reader per real data set (layout, bands, classes, citation)
    synthetic.py    the synthetic data set: sensor models and its loader
    real/           assembling a real data set from its readers (settings, index,
                    labels, deal, pixels)
"""

from fed_uml.data.catalog import available_datasets, load_dataset, register_dataset

__all__ = ["available_datasets", "load_dataset", "register_dataset"]
