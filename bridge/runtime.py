"""What every ``bridge`` command shares: logging set-up and running a coroutine."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

#: Libraries whose INFO lines say nothing an operator needs at start (alembic's plugin
#: set-up, the HTTP server's per-request lines); their warnings still show.
QUIET_LOGGERS = ("alembic", "uvicorn.access", "httpx")


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (``DEBUG``, ``INFO``...): time, level, logger, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion on uvloop's event loop (asyncio's where uvloop is missing)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
