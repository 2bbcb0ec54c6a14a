"""The Flower ServerApp (`server_app`) and what it is made of: the round driver (`rounds`), the
institutions it knows (`roster`), messaging (`messaging`), sampling and averaging (`strategy`),
checkpoints (`checkpoint`) and the per-modality summaries (`summary`)."""


class FederationError(RuntimeError):
    """The federation cannot go on (too few institutions answered, settings that disagree)."""
