"""The Flower ServerApp (`server_app`) and what it is made of.

The round driver (`rounds`), the institutions it knows (`roster`), messaging (`messaging`), sampling
and averaging (`strategy`), checkpoints (`checkpoint`) and the per-modality summaries (`summary`).
"""

from fed_uml.errors import UserError


class FederationError(UserError, RuntimeError):
    """The federation cannot go on (too few institutions answered, settings that disagree)."""
