"""The daemon's logging: stderr, syslog (when /dev/log exists), and the buffer LOG_DUMP reads.

One line per lease event (join, acquire, release, renewal failure, kill), each naming the
lockspace or resource and the pid concerned, so that "who holds this, and why did my acquire
fail" can be answered from the log alone.
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import sys

__all__ = ["LogBuffer", "buffer", "setup"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BUFFER_BYTES = 1 << 20  # sanlock's log_dump buffer is 1 MiB too


class LogBuffer(logging.Handler):
    """The last ``limit`` bytes of log lines, for LOG_DUMP."""

    def __init__(self, limit: int = BUFFER_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self._lines: collections.deque[str] = collections.deque()
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record) + "\n"
        self._lines.append(line)
        self._size += len(line)
        while self._size > self.limit and self._lines:
            self._size -= len(self._lines.popleft())

    def text(self) -> str:
        """Everything buffered, oldest first."""
        return "".join(self._lines)


buffer = LogBuffer()


def setup(
    *,
    level: int = logging.INFO,
    to_stderr: bool = True,
    use_syslog: bool = True,
    log_file: str = "",
) -> None:
    """Send the ``sync_manager`` loggers to the LOG_DUMP buffer, stderr (``to_stderr``), syslog
    (when there is one) and ``log_file`` (when given: a daemon in the background has no stderr).

    Raises OSError if ``log_file`` cannot be opened.
    """
    root = logging.getLogger("sync_manager")
    root.setLevel(level)
    formatter = logging.Formatter(FORMAT)
    buffer.setFormatter(formatter)
    root.addHandler(buffer)
    if to_stderr:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(formatter)
        root.addHandler(stderr)
    if log_file:
        # Watched: a log rotated away (logrotate) is reopened at the next line.
        to_file = logging.handlers.WatchedFileHandler(log_file)
        to_file.setFormatter(formatter)
        root.addHandler(to_file)
    if use_syslog and os.path.exists("/dev/log"):
        syslog = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        syslog.setFormatter(logging.Formatter("sync_manager[%(process)d]: %(message)s"))
        root.addHandler(syslog)
