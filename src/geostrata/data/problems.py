"""Every problem of a data set at once, for `geostrata data check`.

A loader raises on the first bad entry: training must not start on a half-read file. Given a
`problems` list instead, it writes each bad entry's message there (file:line, or file and entry
index) and goes on with the next one, so a check can name all of them. Entries a loader skips on
purpose (a referring expression left empty in the release) are warned about once when loading,
and listed one by one in a check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from geostrata.errors import AnnotationError, ImageError, InputError

T = TypeVar("T")
Problems = list[str]
# what a bad entry raises; a missing file (DatasetNotFoundError) stops the whole file instead
ENTRY_ERRORS = (AnnotationError, ImageError, InputError)
WARN_EXAMPLES = 3


def attempt(problems: Problems | None, parse: Callable[..., T], *args: Any) -> T | None:
    """parse(*args); with a problems list, a bad entry's error is written there, None returned."""
    if problems is None:
        return parse(*args)
    try:
        return parse(*args)
    except ENTRY_ERRORS as err:
        problems.append(str(err))
        return None


def skipped(problems: Problems | None, messages: list[str], logger: logging.Logger) -> None:
    """Entries skipped on purpose: each one a problem in a check, else one warning."""
    if not messages:
        return
    if problems is not None:
        problems.extend(messages)
        return
    examples = "; ".join(messages[:WARN_EXAMPLES])
    more = f" and {len(messages) - WARN_EXAMPLES} more" if len(messages) > WARN_EXAMPLES else ""
    logger.warning("skipped %d entries: %s%s", len(messages), examples, more)
