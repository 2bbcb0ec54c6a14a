"""What pyproject.toml cannot say: `conf/` ships inside the `fed_uml` package.

The settings stay at the top of the repository (`conf/`, where Hydra and `flwr run .` read them)
and are installed as `fed_uml/conf`, so that a non-editable install (a wheel on a cluster or a
deployment node) finds them without any environment variable (`fed_uml.federated.config.conf_dir`).
setuptools' `packages.find` in pyproject.toml cannot map a folder onto another package's name;
everything else is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["fed_uml*", "clients*", "server*", "localrun*", "experiments*"])
    + ["fed_uml.conf"],
    package_dir={"fed_uml.conf": "conf"},
    package_data={
        "fed_uml.conf": ["*.yaml", "*/*.yaml"],
        # Flower's floor for `fed-uml bench scale` is an app directory of its own
        "experiments.bench.minimal_app": ["pyproject.toml"],
        "experiments.bench": ["*.sh"],
    },
)
