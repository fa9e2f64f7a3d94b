"""One worker thread per kind of background work, where the newest request wins.

The viewer computes drag previews and statistics off the UI thread. A job is a
generator run on the worker: each value it yields reaches the UI thread through a
queued signal, in order (a drag preview yields counts first, statistics after).
While a job runs, newer submissions replace each other and only the newest waits;
parts of a job older than one already delivered are dropped, so a slow job never
overwrites what a newer one showed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from PySide6 import QtCore


class _Relay(QtCore.QObject):
    part = QtCore.Signal(object)  # (seq, tag, index, value)
    end = QtCore.Signal(object)  # (seq, exception | None)


class _Job(QtCore.QRunnable):
    def __init__(self, seq: int, tag, work: Callable[[], Iterator], relay: _Relay):
        super().__init__()
        self.setAutoDelete(False)  # Python keeps it (LatestWins._running) until its end is seen
        self.seq, self.tag, self.work, self.relay = seq, tag, work, relay

    def run(self):
        try:
            for i, value in enumerate(self.work()):
                self.relay.part.emit((self.seq, self.tag, i, value))
            self.relay.end.emit((self.seq, None))
        except Exception as exc:  # noqa: BLE001 - reported on the UI thread, never lost in a worker
            self.relay.end.emit((self.seq, exc))


class LatestWins(QtCore.QObject):
    """Run ``submit(tag, work)`` jobs one at a time on a worker thread, newest first."""

    sigPart = QtCore.Signal(object, int, object)  # tag, index of the yielded value, value
    sigError = QtCore.Signal(object, str)  # tag, message

    def __init__(self, parent=None):
        super().__init__(parent)
        self.pool = QtCore.QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.relay = _Relay(self)
        self.relay.part.connect(self._part)
        self.relay.end.connect(self._end)
        self._seq = 0
        self._shown: dict[int, int] = {}  # value index -> newest seq delivered
        self._running: _Job | None = None
        self._pending: _Job | None = None

    def submit(self, tag, work: Callable[[], Iterator]) -> None:
        self._seq += 1
        job = _Job(self._seq, tag, work, self.relay)
        if self._running is None:
            self._running = job
            self.pool.start(job)
        else:
            self._pending = job

    @property
    def running_tag(self):
        return None if self._running is None else self._running.tag

    def _part(self, payload) -> None:
        seq, tag, index, value = payload
        if seq > self._shown.get(index, 0):
            self._shown[index] = seq
            self.sigPart.emit(tag, index, value)

    def _end(self, payload) -> None:
        seq, exc = payload
        job = self._running
        self._running = None
        if self._pending is not None:
            self._running, self._pending = self._pending, None
            self.pool.start(self._running)
        if exc is not None and job is not None:
            self.sigError.emit(job.tag, str(exc))

    @property
    def busy(self) -> bool:
        return self._running is not None or self._pending is not None

    def wait(self, msecs: int = 10000) -> bool:
        """Let the running job finish (tests; closing the window)."""
        return self.pool.waitForDone(msecs)
