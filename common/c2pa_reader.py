"""Reads C2PA manifests in child processes, each read bounded in time and in memory.

The C2PA reference library is native code, which no Python thread can stop; so every read runs
in a child process (`common/c2pa_child.py`, an isolated interpreter with an empty environment)
that caps its own address space. A read that overruns its time gets its child killed, one that
runs out of memory ends its child, and both answer `invalid` with a reason: a read never takes
the server longer than its time limit (plus a new child's start-up) and never touches the
server's memory. Children are kept between reads (starting one costs about 0.1 s), at most
`max_children` at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import subprocess  # nosec B404
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common import c2pa_child

__all__ = ["DEFAULT_MEMORY_BYTES", "ManifestReader", "ManifestReading", "Validation"]

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024  # address space a child may use beyond the library
START_TIMEOUT_S = 10.0  # for a new child to load the library (about 0.1 s on an idle machine)
_MAX_READS_PER_CHILD = 1000  # then a fresh child, so that no leak can build up
_MAX_ANSWER_BYTES = 64 * 1024  # a child's answer is a few hundred bytes
_CHUNK = 64 * 1024  # bytes per pipe read or write
_CHILD_SCRIPT = Path(c2pa_child.__file__).resolve()
_log = logging.getLogger(__name__)

Validation = Literal["trusted", "untrusted", "invalid"]


@dataclass(frozen=True)
class ManifestReading:
    """What the active manifest says and whether it holds: a read that failed is `invalid`."""

    validation: Validation
    digital_source_types: tuple[str, ...] = ()  # of its actions, in order
    ingredient_source_types: tuple[str, ...] = ()  # of the actions of its ingredients' manifests
    generator: str | None = None  # the claim generator ("name version")
    signer: str | None = None  # the signing certificate's organisation (or common name)
    reason: str | None = None  # why it is not `trusted`: failure codes, or how the read failed


class _ChildFailed(Exception):
    """The child did not answer: it timed out, stopped, or answered nonsense."""


class _Child:
    """One child process and its pipes, used by one read at a time."""

    def __init__(self, memory_bytes: int) -> None:
        # Our own script and a number as arguments, no shell.
        self.process = subprocess.Popen(  # noqa: S603  # nosec B603
            [sys.executable, "-I", str(_CHILD_SCRIPT), str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},  # the child needs none of the server's settings (nor its secrets)
        )
        self._in, self._out = self.process.stdin.fileno(), self.process.stdout.fileno()  # PIPEs
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self._pending = b""
        self.ready = False
        self.reads = 0

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            if self.exchange(b"", timeout_s) + b"\n" != c2pa_child.READY:
                raise _ChildFailed("did not start")
            self.ready = True

    def exchange(self, request: bytes, timeout_s: float) -> bytes:
        """Send `request`, return the next answer line; `_ChildFailed` past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        unsent = memoryview(request)
        with selectors.DefaultSelector() as selector:
            selector.register(self._out, selectors.EVENT_READ)
            if unsent:
                selector.register(self._in, selectors.EVENT_WRITE)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _ChildFailed(f"timed out after {timeout_s:g} s")
                for key, _ in selector.select(remaining):
                    if key.fd == self._in:
                        unsent = unsent[self._write(unsent) :]
                        if not unsent:
                            selector.unregister(self._in)
                    else:
                        self._read()
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _write(self, unsent: memoryview) -> int:
        try:
            return os.write(self._in, unsent[:_CHUNK])
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            raise _ChildFailed("stopped") from None

    def _read(self) -> None:
        try:
            chunk = os.read(self._out, _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            raise _ChildFailed("stopped")
        self._pending += chunk
        if len(self._pending) > _MAX_ANSWER_BYTES:
            raise _ChildFailed("answered too much")

    def close(self) -> int:
        """Stop the child and return its exit status (negative: the signal that ended it)."""
        self.process.kill()
        status = self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a pipe to a child that is gone
                    pipe.close()
        return status


class ManifestReader:
    """Reads C2PA manifests, at most `max_children` at once, each in its own child process."""

    def __init__(self, *, max_children: int = 2, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        if max_children < 1:
            raise ValueError("max_children must be at least 1")
        self.max_children = max_children
        self._memory_bytes = memory_bytes
        self._slots = threading.BoundedSemaphore(max_children)
        self._idle: list[_Child] = []
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start a child now (it loads the library in the background) unless one is idle."""
        with self._lock:
            if not self._idle:
                self._idle.append(_Child(self._memory_bytes))

    def read(
        self, data: bytes, *, mime: str, trust_anchors_pem: str | None, timeout_s: float
    ) -> ManifestReading | None:
        """The active manifest of `data` (`mime`: image/jpeg, image/png, image/webp), or None
        when it has none. Never raises for any content: a failed read is `invalid`."""
        if not self._slots.acquire(timeout=timeout_s):
            return ManifestReading("invalid", reason="no C2PA reader was free in time")
        try:
            return self._read_in_child(data, mime, trust_anchors_pem or "", timeout_s)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop the idle children (a read in progress keeps its own until it ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()

    def __enter__(self) -> ManifestReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_in_child(
        self, data: bytes, mime: str, anchors: str, timeout_s: float
    ) -> ManifestReading | None:
        mime_bytes, anchor_bytes = mime.encode(), anchors.encode()
        header = c2pa_child.HEADER.pack(len(mime_bytes), len(anchor_bytes), len(data))
        request = header + mime_bytes + anchor_bytes + data
        child = self._take()
        try:
            child.wait_ready(START_TIMEOUT_S)
            reading = _reading(json.loads(child.exchange(request, timeout_s)))
        except (_ChildFailed, KeyError, TypeError, ValueError) as failure:
            reason = f"the C2PA reader {failure} (exit status {child.close()})"
            _log.warning("C2PA read failed: %s", reason)
            return ManifestReading("invalid", reason=reason)
        self._put_back(child)
        return reading

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
                child.close()
        return _Child(self._memory_bytes)

    def _put_back(self, child: _Child) -> None:
        child.reads += 1
        if child.reads >= _MAX_READS_PER_CHILD:
            child.close()
            return
        with self._lock:
            self._idle.append(child)


def _reading(answer: dict) -> ManifestReading | None:
    """The child's JSON answer as a `ManifestReading` (ValueError/TypeError when malformed)."""
    if not answer["found"]:
        return None
    validation = answer["validation"]
    if validation not in ("trusted", "untrusted", "invalid"):
        raise ValueError(f"unknown validation {validation!r}")
    return ManifestReading(
        validation=validation,
        digital_source_types=tuple(str(t) for t in answer.get("digital_source_types") or ()),
        ingredient_source_types=tuple(str(t) for t in answer.get("ingredient_source_types") or ()),
        generator=answer.get("generator"),
        signer=answer.get("signer"),
        reason=answer.get("reason"),
    )
