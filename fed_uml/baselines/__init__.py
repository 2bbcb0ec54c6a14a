"""The compared methods of the study (ISCA, DANN, CDAN, MCC, MDD), registered as `method=` names.

All five use heterogeneous encoders (every backbone stage modality-specific), one shared
classifier, labels on every modality, and the method's alignment objective between the
modalities' encoder features (see each module's docstring and `common.py`). Importing this
package registers them with `fed_uml.methods.register_method`.
"""

from fed_uml.baselines import cdan, dann, isca, mcc, mdd  # noqa: F401  (registration)
from fed_uml.baselines.common import build_heterogeneous_model, grad_reverse

__all__ = ["build_heterogeneous_model", "grad_reverse"]
