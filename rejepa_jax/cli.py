"""What every command-line program shares: quiet library logs and user errors without tracebacks."""

from __future__ import annotations

import logging as python_logging
import sys
from collections.abc import Callable

from absl import app, logging

# Errors that describe a bad input or setting: printed as one line, not as a traceback.
USER_ERRORS = (ValueError, FileNotFoundError)

_NOISY_PATHS = ("/orbax/", "/grain/", "/jax/_src/")


class _QuietLibraryInfo(python_logging.Filter):
    """Drops INFO records of Orbax, Grain and JAX internals (every save, restore, compile)."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in _NOISY_PATHS)
        return record.levelno >= python_logging.WARNING or not noisy


def quiet_library_info() -> None:
    """Installs the filter on absl's handler (call once, inside absl's main)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraryInfo) for f in handler.filters):
        handler.addFilter(_QuietLibraryInfo())


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)`, turning a user error into `error: <message>` and exit status 1."""
    try:
        app.run(main)
    except USER_ERRORS as error:
        sys.exit(f"error: {error}")
