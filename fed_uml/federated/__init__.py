"""Federated UML: the pieces the Flower ClientApp and ServerApp share.

`config` maps Flower run-config keys onto the Hydra config, `protocol` names the messages
between the apps and their typed records, `roles` says which institution (modality and data
partition) a node plays, `partition` splits a modality's data among its institutions,
`transfer` puts backbones on the wire, `backbone` builds the initial one on the server,
`institution` is the client-side work (imports data readers; the server never imports it),
`private_store` keeps an institution's private state on its own disk for resumption, and
`audit` logs what an institution sends.
"""
