"""A compact console logger for `cdp run`: one short line per message and per step."""

import logging
import sys

import dagster as dg

_STEP_EVENTS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "RUN_FAILURE"}


def _dagster_event_type(record: logging.LogRecord) -> str | None:
    event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
    return getattr(event, "event_type_value", None)


class _StepsAndMessages(logging.Filter):
    """Messages at INFO and above, and the start, end or failure of each step."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or _dagster_event_type(record) in _STEP_EVENTS


class _CompactFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key") or ""
        message = meta.get("orig_message") or record.getMessage()
        when = self.formatTime(record, "%H:%M:%S")
        return f"{when} {step + ': ' if step else ''}{message}"


@dg.logger(description="One line per message and per step: time, step, message.")
def compact_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.getLogger("cdp.run")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.addFilter(_StepsAndMessages())
        handler.setFormatter(_CompactFormatter())
        logger.addHandler(handler)
    return logger
