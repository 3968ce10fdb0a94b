"""structlog set-up: a console renderer on a terminal, JSON lines otherwise.

Under systemd, stderr goes to journald, which stores each JSON line as the
MESSAGE of one entry, so `journalctl -u bpm-doctor -o cat` shows the events
with their fields. Event names are stable snake_case; fields never carry
secret values (argv and environment values pass through bpm_doctor.redact
before they reach a log call).
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(verbosity: int = 0, stream=None) -> None:
    """Configure structlog for this process.

    `verbosity` 0 logs warnings and errors, 1 adds info, 2 adds debug.
    """
    stream = stream or sys.stderr
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    on_terminal = hasattr(stream, "isatty") and stream.isatty() and "JOURNAL_STREAM" not in os.environ
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if on_terminal:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer(sort_keys=True)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound):
    return structlog.get_logger("bpm_doctor").bind(**bound)
