"""A test fails when the code under test, or a mount process it started, logs a warning
or an error it did not declare (after s3ql's tests/pytest_checklogs.py).

A warning nobody looks at is how a silent data loss starts: a write that failed and was
retried on a stale handle, a flush reported as success after an error. A test that
provokes one on purpose says which with ``@pytest.mark.expect_log("regex", ...)`` (on
the test, its class or its module); each regex is searched in the message, and the
lines it matches are allowed.

In the test's own process a handler on the root logger sees every record; a mount
process logs to a file that the ``mount`` fixture hands to :func:`unexpected_lines`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

import pytest

__all__ = ["LOST_BYTES", "MARK", "RECONNECTS", "expected_patterns", "unexpected_lines"]

MARK = "expect_log"

# What a test that cuts, stalls or restarts the server provokes on purpose.
RECONNECTS = (
    r"lost; reconnecting",
    r"^reconnected to",
    r"counting the connection as lost",
    r"no answer within",
)
# What a test that makes bytes fail to land (full disk, a server gone for good) provokes.
LOST_BYTES = (
    r"^write-behind of .* failed",
    r"unreachable .*; failing what waits",
    r"^cannot reopen",
    r"^not flushed",
)
# Third-party chatter is not ours to judge: paramiko logs every failed handshake as a
# traceback at ERROR (the mount process turns it off, fs/cli.py); our own log says what
# the failure means.
_NOT_OURS = ("paramiko",)

# The mount process's log format (fs/cli.py): "date time LEVEL logger: message".
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (WARNING|ERROR|CRITICAL) (\S+): (.*)$")


def expected_patterns(item: pytest.Item) -> list[re.Pattern[str]]:
    return [re.compile(arg) for mark in item.iter_markers(MARK) for arg in mark.args]


def _allowed(message: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return any(pattern.search(message) for pattern in patterns)


def unexpected_lines(log_text: str, patterns: list[re.Pattern[str]]) -> list[str]:
    """The WARNING/ERROR lines of a mount process's log that no pattern allows."""
    found = []
    for line in log_text.splitlines():
        match = _LOG_LINE.match(line)
        if match and not _allowed(match.group(3), patterns):
            found.append(line)
    return found


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARK}(*regexes): warnings/errors this test provokes on purpose"
    )


@pytest.fixture(autouse=True)
def check_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    patterns = expected_patterns(request.node)
    unexpected = [
        f"{record.levelname} {record.name}: {record.getMessage()}"
        for record in handler.records
        if not record.name.startswith(_NOT_OURS) and not _allowed(record.getMessage(), patterns)
    ]
    if unexpected:
        pytest.fail(
            "logged without being expected (add @pytest.mark.expect_log if on purpose):\n"
            + "\n".join(unexpected[:20]),
            pytrace=False,
        )
