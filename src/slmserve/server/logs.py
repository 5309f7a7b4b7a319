"""--log-format json: one JSON object a line; an access line carries its request's fields (middleware/record.py)."""

from __future__ import annotations

import json
import logging


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and a request's fields when the line is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "request", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
