"""fed-uml: Unpaired Multimodal Learning for satellite sensors, centralized and federated.

The library holds everything the Flower apps and the experiment scripts share: the data
containers (`fed_uml.modality`), data sets (`fed_uml.data`), models (`fed_uml.models`),
training (`fed_uml.training`), post-hoc BN calibration (`fed_uml.calibration`), UML and the
compared methods (`fed_uml.methods`), centralized runs (`fed_uml.centralized`) and the
federated pieces (`fed_uml.federated`). It never imports from `clients/`, `server/`,
`localrun/` or `experiments/` (docs/explanation/architecture.md; `tests/test_architecture.py`).
"""

__version__ = "0.1.0"
