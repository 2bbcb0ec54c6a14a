"""The methods of the study, selected by `method=<name>`: how models are trained and deployed per modality.

A method takes the loaded modalities and the resolved config and returns, per modality, the
test accuracy of the deployed model before and after BN calibration. Importing this package
registers every method:

    registry.py   register_method / get_method / available_methods (the name -> function registry)
    runner.py     train_settings, build_model, evaluate_with_calibration (what every method shares)
    uml.py        uml: one model, a projection per modality, one shared backbone
    unimodal.py   unimodal: one model per modality alone, with the matched step budget
    pooled.py     pooled: one model on the union of a sensor's parts (the positive control)
    alignment.py  what the compared methods share: heterogeneous encoders, gradient reversal, run_aligned
    isca.py, dann.py, cdan.py, mcc.py, mdd.py   the compared methods (Table 2 of the study)
"""

from fed_uml.methods import cdan, dann, isca, mcc, mdd, pooled, uml, unimodal  # noqa: F401  (registration)
from fed_uml.methods.registry import available_methods, get_method, register_method
from fed_uml.methods.runner import build_model, evaluate_with_calibration, train_settings

__all__ = [
    "available_methods",
    "build_model",
    "evaluate_with_calibration",
    "get_method",
    "register_method",
    "train_settings",
]
