"""One logging format for every entry point."""
from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def setup_logging(level: int = logging.INFO, rank: int = None) -> None:
    """Configure the root logger once; non-zero DDP ranks only log warnings."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,
                        format=_FORMAT, force=True)


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a module (use ``get_logger(__name__)``)."""
    return logging.getLogger(name)
