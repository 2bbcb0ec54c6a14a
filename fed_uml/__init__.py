"""fed-uml: Unpaired Multimodal Learning for satellite sensors, centralized and federated.

The library holds everything the Flower apps and the experiment scripts share: models
(`fed_uml.models`), post-hoc BN calibration (`fed_uml.calibration`), data
(`fed_uml.data`), training (`fed_uml.training`) and the compared methods
(`fed_uml.baselines`). It never imports from `clients/`, `server/` or `experiments/`.
"""

__version__ = "0.1.0"
