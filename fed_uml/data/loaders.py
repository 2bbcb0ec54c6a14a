"""Imports every built-in data-set loader so that it registers itself."""

from fed_uml.data import (
    real_loader,  # noqa: F401
    synthetic_loader,  # noqa: F401
)
