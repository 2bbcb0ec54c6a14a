"""Route this project's log records to Flower's logger, so that progress of the ServerApp
and ClientApps appears in `flwr run --stream` and in SuperNode logs (Flower attaches its
streaming handlers to its own logger, at run time)."""

from __future__ import annotations

import logging

from flwr.common.logger import FLOWER_LOGGER

_PACKAGES = ("fed_uml", "server", "clients")


class _ToFlower(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        FLOWER_LOGGER.handle(record)


def route_to_flower(level: int = logging.INFO) -> None:
    for name in _PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _ToFlower) for h in logger.handlers):
            logger.addHandler(_ToFlower())
        logger.propagate = False
