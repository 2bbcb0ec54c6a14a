"""Run the Flower runtime on this machine.

A private local SuperLink and SuperNodes, network namespaces standing in for separate hosts, and TLS
certificates and SuperNode keys.

- `localrun.flower`: `FlowerRuntime` (its own FLWR_HOME, SuperLink(s), SuperNodes, `flwr run`),
  `find_strays` / `kill_strays` (processes a runtime left behind), ports and run-config TOML;
- `localrun.netns`: `NetnsLab`, several "hosts" on one Linux machine (network namespaces on a bridge);
- `localrun.certificates`: a self-signed CA, a SuperLink certificate and SuperNode key pairs
  (also a command: `python -m localrun.certificates OUTDIR ...`).

Used by the experiment scripts, the benchmarks and the tests. It may import `fed_uml`; the
library and the two Flower apps never import it (the FAB that `flwr run` ships does not need it).
"""
