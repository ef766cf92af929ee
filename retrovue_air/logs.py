"""One log format for every process of the service: level, role, message, on stderr."""

from __future__ import annotations

import logging
import sys

_ROLE = {"role": "supervisor"}


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _ROLE["role"]
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(role)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def set_role(role: str) -> None:
    """Called first thing in a forked child, so its lines say which process wrote them."""
    _ROLE["role"] = role
