"""Flower ClientApp: one institution holding one modality's local data.

The messages and their records are those of `fed_uml.federated.protocol`: `query.describe`
(who it is, its data sizes), `train`, `evaluate`, `query.calibrate`; what the institution
does with each is in `clients.handlers`.

Why the handlers live in another module, imported at the first message: Flower's simulation
loads this module in its driver process only to check that it can, and starts Ray after that
check. Importing torch and the institution's code here made Ray wait for them (2.5 s of the
start-up of every simulation, on 2 cores); the actors import them with their first message,
as they did before.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import FLOWER_LOGGER

from clients.mods import dp_clip_mod, secure_aggregation_mod
from fed_uml.federated import protocol
from fed_uml.federated.audit import audit_mod

# audit_mod outermost: it logs what actually leaves (docs/privacy.md for the other two)
app = ClientApp(mods=[audit_mod, secure_aggregation_mod, dp_clip_mod])


class _ActorShutdownIsNotAWarning(logging.Filter):
    """Drops Flower's "Manually terminating ClientAppActor" warning.

    The simulation ends every Ray actor that way at the end of every run, so it says nothing about
    the run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Manually terminating")


FLOWER_LOGGER.addFilter(_ActorShutdownIsNotAWarning())


def _handlers():
    from clients import handlers

    return handlers


@app.query(protocol.DESCRIBE_ACTION)
def describe(msg: Message, context: Context) -> Message:
    """Answer `query.describe`: the institution's modality, data sizes and classes."""
    return _handlers().describe(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received backbone with the private state for the instructed local epochs or steps."""
    return _handlers().train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received backbone with the private state on the local test data."""
    return _handlers().evaluate(msg, context)


@app.query(protocol.CALIBRATE_ACTION)
def calibrate(msg: Message, context: Context) -> Message:
    """Run Algorithm 1 (BN calibration) with the final backbone and write the model to the node's disk."""
    return _handlers().calibrate(msg, context)
