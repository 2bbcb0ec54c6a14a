"""EuroSAT-SAR (Sentinel-1): the SAR counterpart of EuroSAT, with the same class folders and names.

EuroSAT-SAR matches every EuroSAT Sentinel-2 patch with one Sentinel-1 IW GRD patch by
location: 27,000 dual-polarisation patches of 64 x 64 px over the 10 EuroSAT classes.

Layout assumed (under the data root; see `fed_uml.data.settings` for the root convention)
    ``eurosat_sar/<Class>/<Class>_<n>.tif`` (the class folders may also sit in
    ``eurosat_sar/EuroSAT-SAR/``, as the published zip may nest them): one GeoTIFF per
    patch with 2 bands, VV then VH, float32 backscatter sigma0 in dB (torchgeo and FG-MAE
    read it as (H, W, 2) or (2, H, W); both are accepted), 64 x 64 px. File names equal
    EuroSAT MS's, so the scene id (``AnnualCrop_1``) pairs a SAR patch with its optical one.
    Split files: EuroSAT-SAR publishes none; ``eurosat-{train,val,test}.txt`` are taken from
    ``eurosat_sar/`` if present, else from the EuroSAT MS or RGB folder beside it (the
    official EuroSAT splits, matched by file stem).

Citation
    Y. Wang, H. H. Hernández, C. M. Albrecht, X. X. Zhu. "Feature Guided Masked Autoencoder
    for Self-supervised Learning in Remote Sensing." arXiv:2310.18653, 2023 (data:
    huggingface.co/datasets/wangyi111/EuroSAT-SAR, licence MIT). Optical source: Helber et
    al., EuroSAT, IEEE JSTARS 2019.
"""

from __future__ import annotations

from typing import ClassVar

from fed_uml.data.download import Resource
from fed_uml.data.eurosat import SPLIT_RESOURCES, EuroSATBase

SAR_BANDS = ("VV", "VH")


class EuroSATSAR(EuroSATBase):
    """EuroSAT-SAR: Sentinel-1 VV and VH in dB (sensor ``sar``)."""

    NAME = "EuroSAT-SAR"
    FOLDER = "eurosat_sar"
    SENSORS: ClassVar[dict[str, tuple[str, ...]]] = {"sar": SAR_BANDS}
    DTYPES: ClassVar[dict[str, tuple[str, ...]]] = {"sar": ("float32",)}  # sigma0 in dB
    IMAGE_DIRS = ("", "EuroSAT-SAR", "EuroSAT_SAR")
    SPLIT_FALLBACK_FOLDERS = ("eurosat_ms", "eurosat_rgb")
    # The zip as published on the Hugging Face hub, pinned to the commit that added it. No
    # checksum is published for it, so none is checked; the EuroSAT split files are.
    RESOURCES = (
        Resource(
            "https://huggingface.co/datasets/wangyi111/EuroSAT-SAR/resolve/"
            "c60e57b0c02e53348f69070ca317c7450f650d92/EuroSAT-SAR.zip",
            "EuroSAT-SAR.zip",
        ),
        *SPLIT_RESOURCES,
    )
