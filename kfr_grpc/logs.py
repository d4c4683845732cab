"""Log output: one JSON object per line on stderr (or plain text, for a terminal).

Request lines carry their fields (method, caller, supplier, correlation_id, status,
duration_ms) as structured keys. No log line anywhere carries a customer ID.

The server writes its lines from a thread of its own (``BackgroundHandler``): the event
loop that serves every call only hands a record over, and does not wait for formatting
or for stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from typing import TextIO

# The attributes a LogRecord has of its own; anything else came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class BackgroundHandler(logging.Handler):
    """Formats and writes records in a thread of its own, a batch at a time.

    A line per call formatted and written by the thread that serves the calls cost it
    about a sixth of its time (measured with ``bench.capacity``); handed over, it costs a
    deque append. Lines are written within ``interval`` seconds, in order. A warning or
    worse is written at once, after everything before it, so that an error is never
    late; ``flush`` and ``close`` (``logging.shutdown`` at exit) write what is left. Only
    a process killed outright loses its last ``interval`` of INFO lines.
    """

    def __init__(self, stream: TextIO, interval: float = 0.05) -> None:
        super().__init__()
        self._stream = stream
        self._interval = interval
        self._pending: deque[logging.LogRecord] = deque()
        self._writing = threading.Lock()
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._run, name="kfr-log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        # The message now, with the arguments as they are now: formatted later, an
        # argument may have changed, or (grpc's C objects) no longer exist.
        record.msg, record.args = record.getMessage(), None
        self._pending.append(record)
        if record.levelno >= logging.WARNING:
            self._write_pending()

    def flush(self) -> None:
        self._write_pending()

    def close(self) -> None:
        self._closing.set()
        if self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        self._write_pending()
        super().close()

    def _run(self) -> None:
        while not self._closing.wait(self._interval):
            self._write_pending()

    def _write_pending(self) -> None:
        with self._writing:
            lines = []
            while self._pending:
                record = self._pending.popleft()
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:
                    self.handleError(record)
            if lines:
                try:
                    self._stream.write("".join(lines))
                    self._stream.flush()
                except Exception:
                    self.handleError(record)


# grpc's Cython layer logs at DEBUG with arguments that may be C objects in the middle of
# their deallocation (an unstarted server's ``__dealloc__`` passes itself): a record
# that outlives that moment (a capture, a later format) points at freed memory.
GRPC_CYTHON_LOGGER = "grpc._cython.cygrpc"


def quiet_grpc_debug() -> None:
    """No DEBUG records from grpc's Cython layer (see ``GRPC_CYTHON_LOGGER``)."""
    logging.getLogger(GRPC_CYTHON_LOGGER).setLevel(logging.INFO)


def configure(
    level: str, log_format: str, worker: int | None = None, *, background: bool = False
) -> None:
    """Logs to stderr; ``background``: from a writer thread (``BackgroundHandler``),
    and records without the source line, thread and process they would otherwise look
    up (the logging HOWTO's "Optimization"; the lines do not show them)."""
    quiet_grpc_debug()
    if background:
        logging._srcfile = None  # type: ignore[attr-defined]
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
    handler: logging.Handler = (
        BackgroundHandler(sys.stderr) if background else logging.StreamHandler(sys.stderr)
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = f" worker-{worker}" if worker is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
