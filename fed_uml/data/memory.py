"""Refuse, before a pixel is read or rendered, data that would not fit in this machine's memory.

Why: an in-memory data set is held as float32 tensors, and loading peaks at about three times
those tensors (the decoded arrays, the tensors, the normalised copy) plus the interpreter and
torch, about 0.5 GiB (measured over six loads of EuroSAT and BigEarthNet: peak RSS = 0.5 GiB +
2.6 to 3.1 x the tensors). A setting that asks for more than the machine has would otherwise
render or read for minutes and then be killed, with nothing to show for it.
"""

from __future__ import annotations

import psutil

from fed_uml.errors import SettingsError

BASE_BYTES = 512 * 2**20
PEAK_FACTOR = 3.0
BYTES_PER_VALUE = 4  # float32


def estimated_peak_bytes(values: int) -> int:
    """Peak memory of loading `values` float32 pixel values (all modalities, all splits)."""
    return int(BASE_BYTES + PEAK_FACTOR * BYTES_PER_VALUE * values)


def available_bytes() -> int:
    """Memory this process can still take without swapping (psutil's `available`)."""
    return int(psutil.virtual_memory().available)


def check_fits(values: int, what: str, setting: str) -> int:
    """Refuse with the estimate and the setting to change when `values` float32 values do not fit.

    Returns the estimate in bytes.
    """
    need, have = estimated_peak_bytes(values), available_bytes()
    if need > have:
        raise SettingsError(f"{what}: about {values * BYTES_PER_VALUE / 2**30:.1f} GiB of float32 pixels, "
                            f"{need / 2**30:.1f} GiB at the peak of loading, but this machine has "
                            f"{have / 2**30:.1f} GiB available; lower {setting}")
    return need
