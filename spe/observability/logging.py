"""Log lines an operator's tools can read: one per event, with the request's id and user.

`SPE_LOG_FORMAT=json` (the default in production) writes one JSON object a line
(python-json-logger): `timestamp` (ISO 8601, UTC), `level`, `logger`, `message`,
`request_id`, `user` (the principal's subject, never a token) and the event's own fields
(the access log's `method`, `route`, `status`, `duration_ms`; a job's `job`, `state`...).
`text` writes the same on one line for a terminal. Either way an exception is one line:
`exc_type`, `exc_message` and the traceback as one escaped string, never a multi-line
dump that log shippers split into unrelated events.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from spe.observability.request_id import request_id_var, user_var

#: LogRecord attributes that are not an event's own fields.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "user", "color_message", "taskName"}
#: Loggers too chatty at INFO for a service's log.
_QUIET = {"procrastinate": logging.WARNING, "httpx": logging.WARNING,
          "alembic.runtime.plugins": logging.WARNING,
          "pynetdicom": logging.WARNING, "uvicorn.access": logging.WARNING}


class _RequestContext(logging.Filter):
    """Adds the current request's id and user (None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "user", None) is None:
            record.user = user_var.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"
                                                                ).replace("+00:00", "Z")


def _exception_fields(record: logging.LogRecord) -> dict[str, str]:
    if not record.exc_info or record.exc_info[0] is None:
        return {}
    kind, exc, tb = record.exc_info
    return {"exc_type": kind.__name__, "exc_message": str(exc)[:2000],
            # One string: the JSON encoder escapes its newlines; text joins them with " | ".
            "traceback": "".join(traceback.format_exception(kind, exc, tb))[-8000:]}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items()
            if k not in _RECORD_ATTRS and not k.startswith("_")}


class JsonLines(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(json_ensure_ascii=False, json_default=str)

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": _timestamp(record), "level": record.levelname,
            "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "user": getattr(record, "user", None)}
        data.update(_extra(record))
        data.update(_exception_fields(record))
        return self.serialize_log_record(data)


class TextLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        who = " ".join(f"{k}={v}" for k, v in (("request_id", getattr(record, "request_id", None)),
                                                ("user", getattr(record, "user", None))) if v)
        fields = {**_extra(record), **_exception_fields(record)}
        tail = " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
                        for k, v in fields.items() if k != "traceback")
        line = " ".join(p for p in (_timestamp(record), record.levelname, record.name,
                                    f"[{who}]" if who else "", record.getMessage(), tail) if p)
        if "traceback" in fields:
            line += " traceback=" + fields["traceback"].strip().replace("\n", " | ")
        return line.replace("\n", "\\n")


def log_handler(fmt: str, stream) -> logging.Handler:
    """A handler writing `fmt` lines with the request's id and user to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines() if fmt == "json" else TextLines())
    handler.addFilter(_RequestContext())
    return handler


def configure_logging(fmt: str = "text", level: str = "INFO", *, stream=None) -> None:
    """Route every logger (ours, uvicorn's, libraries') through one handler on stderr in
    `fmt` ("json" or "text"). Uvicorn's own access log is silenced: the middleware
    (spe/observability/middleware.py) writes a better one under `spe.access`."""
    handler = log_handler(fmt, stream or sys.stderr)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # Raw paths with ids and query strings: never written, whatever level uvicorn sets.
    logging.getLogger("uvicorn.access").disabled = True
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, logging.getLevelName(level)))
