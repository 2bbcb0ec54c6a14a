"""Federated UML: the pieces the Flower ClientApp and ServerApp share.

`config` maps Flower run-config keys onto the Hydra config, `institutions` says which
modality and data partition a node holds, `partition` splits a modality's data among its
institutions, `institution` is the client-side work (imports data readers; the server
never imports it), `aggregation` is the server-side weighting.
"""
