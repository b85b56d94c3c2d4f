"""Console logging for the command-line tools: keep our messages, drop library INFO chatter."""

from __future__ import annotations

import logging as python_logging

from absl import logging

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
