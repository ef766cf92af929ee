"""A bug in one answer costs that answer, not the service: a 500 for the request, and a log line.

The line carries the traceback, so the bug can be found; it is said at most once per
RepeatedLine period for each kind of answer, so a client repeating the request cannot
flood the log with it.
"""

from __future__ import annotations

import logging
import traceback

from retrovue_air.logs import RepeatedLine

from . import responses

log = logging.getLogger("http_front")

_lines: dict[str, RepeatedLine] = {}


def answer_failed(what: str, head_only: bool = False) -> bytes:
    """The 500 for an answer whose making raised; called in the except block, which it logs."""
    line = _lines.setdefault(what, RepeatedLine(log, logging.ERROR))
    line.say(f"{what} could not be made; answered 500:\n{traceback.format_exc().rstrip()}")
    return responses.text(500, f"{what} could not be made (see the log)", head_only=head_only)
