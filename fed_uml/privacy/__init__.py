"""Privacy beyond "only the backbone travels".

Settings and checks of secure aggregation and of institution-level differential privacy
(`settings`), update clipping and Gaussian noise (`mechanism`), and the privacy accountant
(`accountant`). Used by both Flower apps; imports no data reader and nothing of the apps.

The accountant is imported from `fed_uml.privacy.accountant` by the server only.
"""

from fed_uml.privacy.mechanism import GaussianSumMechanism, clip_update, global_norm
from fed_uml.privacy.settings import PrivacySettings, SecureSettings, privacy_settings, secure_settings

__all__ = ["GaussianSumMechanism", "PrivacySettings", "SecureSettings", "clip_update",
           "global_norm", "privacy_settings", "secure_settings"]
