"""A Kafka group consumer in a process of its own, read as columns.

``ProcessConsumer`` starts ``python -m services.platform.bus.process``: a child
interpreter that joins the group with the ordinary ``KafkaConsumer``, keeps up to
``prefetch`` fetched batches ready, and hands each over as one frame of columns
(topics, partitions, offsets, values) when asked. Fetching and decoding records,
the costliest part of consuming, then runs on a core of its own, outside the
consuming process's GIL.

Offsets move only through ``commit``, made by the child for the parent (the
child is the group member), and the child never commits on its own: if the
parent dies, the child sees its standard input close and leaves the group. What
was fetched but not committed is delivered again, as with any consumer.

Protocol (one request at a time, answered in order): the parent writes one JSON
line per request (``fetch``, ``commit``, ``close``) to the child's standard input;
the child answers each with a frame on its standard output: a 5-byte header
(kind, payload length) and the payload. Kinds: ``R`` ready, ``C`` columns, ``K``
done, ``E`` error (JSON ``{"type", "message"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import struct
import subprocess
import sys
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate, pairwise

from .errors import BusClosedError, BusError, CommitError
from .port import Lifecycle, RecordColumns

_HEADER = struct.Struct("<cI")
_COUNTS = struct.Struct("<II")
_PIPE_BYTES = 1 << 20
_ERRORS: dict[str, type[BusError]] = {
    "CommitError": CommitError,
    "BusClosedError": BusClosedError,
}


def pack_columns(columns: RecordColumns) -> bytes:
    """One ``C`` payload: counts, topic names, then topic index, partition, offset and
    value length per record (native arrays) and the values end to end."""
    names: dict[str, int] = {}
    topic_index = array("H", [names.setdefault(t, len(names)) for t in columns.topics])
    name_bytes = "\n".join(names).encode()
    return b"".join(
        (
            _COUNTS.pack(len(columns), len(name_bytes)),
            name_bytes,
            topic_index.tobytes(),
            array("i", columns.partitions).tobytes(),
            array("q", columns.offsets).tobytes(),
            array("I", map(len, columns.values)).tobytes(),
            *columns.values,
        )
    )


def unpack_columns(payload: bytes) -> RecordColumns:
    """The columns of a ``C`` payload."""
    count, name_length = _COUNTS.unpack_from(payload)
    if count == 0:
        return RecordColumns([], [], [], [])
    at = _COUNTS.size
    names = payload[at : at + name_length].decode().split("\n")
    at += name_length
    columns: list[array[int]] = []
    for code in "HiqI":
        column = array(code)
        end = at + count * column.itemsize
        column.frombytes(payload[at:end])
        columns.append(column)
        at = end
    topic_index, partitions, offsets, lengths = columns
    ends = list(accumulate(lengths, initial=at))
    return RecordColumns(
        [names[k] for k in topic_index],
        partitions.tolist(),
        offsets.tolist(),
        [payload[a:b] for a, b in pairwise(ends)],
    )


def _answer(kind: bytes, payload: bytes) -> tuple[bytes, bytes]:
    """The frame, unless it reports an error: then that error is raised."""
    if kind == b"E":
        error = json.loads(payload)
        raise _ERRORS.get(error["type"], BusError)(error["message"])
    return kind, payload


class ProcessConsumer(Lifecycle):
    """A member of Kafka consumer group ``group`` running in a child process (see the
    module docstring); a ``ColumnConsumer``.

    The pipes are read and written with blocking calls on a thread of this consumer's
    own: a frame (up to ``max_records`` values) then arrives in one or a few reads, each
    releasing the GIL, instead of many small reads on the event loop, each of which
    would wait for the GIL while the consuming process's other threads hold it."""

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        topics: Sequence[str],
        client_id: str = "ehr-ledger",
        max_records: int = 2000,
        prefetch: int = 4,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.topics = list(topics)
        self.client_id = client_id
        self.max_records = max_records
        self.prefetch = prefetch
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._io: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._abandoned = False
        """A request's answer was not read (cancelled): the next answer would be its, so
        the consumer refuses further requests (records fetched for it would otherwise be
        skipped by a later commit)."""

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` when not started)."""
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        if self._process is not None:
            return
        self._abandoned = False
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                __name__,
                "--bootstrap-servers",
                self.bootstrap_servers,
                "--group",
                self.group,
                "--client-id",
                self.client_id,
                "--max-records",
                str(self.max_records),
                "--prefetch",
                str(self.prefetch),
                *self.topics,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"consumer-{self.group}")
        try:
            kind, _ = _answer(*await asyncio.wait_for(self._exchange(b""), self.start_timeout_s))
        except BaseException:  # a failed or cancelled start leaves no child behind
            await self.close()
            raise
        if kind != b"R":  # pragma: no cover - the child answers R or E
            await self.close()
            raise BusClosedError(f"consumer process of group {self.group}: unexpected {kind!r}")

    async def close(self) -> None:
        process, self._process = self._process, None
        io, self._io = self._io, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.write(b'{"op": "close"}\n')
                process.stdin.close()
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if io is not None:  # the thread ends once its read sees the pipe close
            io.shutdown(wait=False)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    async def fetch_columns(self, max_records: int = 500, timeout_s: float = 1.0) -> RecordColumns:
        """The next prefetched batch (at most the child's ``max_records``, fixed at start)."""
        _, payload = await self._request({"op": "fetch", "timeout_s": timeout_s})
        return unpack_columns(payload)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        await self._request(
            {"op": "commit", "offsets": [[t, p, o] for (t, p), o in offsets.items()]}
        )

    async def _request(self, request: dict[str, object]) -> tuple[bytes, bytes]:
        async with self._lock:
            if self._process is None:
                raise BusClosedError(f"consumer process of group {self.group} is not started")
            if self._abandoned:
                raise BusClosedError(
                    f"consumer process of group {self.group}: a request was cancelled "
                    "before its answer was read; close it and start a new one"
                )
            self._abandoned = True  # until the answer is read whole
            kind, payload = await self._exchange(json.dumps(request).encode() + b"\n")
            self._abandoned = False
            return _answer(kind, payload)

    async def _exchange(self, request: bytes) -> tuple[bytes, bytes]:
        """Sends ``request`` (if any) and reads the next frame, on the I/O thread."""
        process, io = self._process, self._io
        assert process is not None and io is not None
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(io, _exchange, process, request)
        if answer is None:
            code = await asyncio.to_thread(_exit_code, process)
            raise BusClosedError(f"consumer process of group {self.group} ended (exit code {code})")
        return answer


def _exchange(process: subprocess.Popen[bytes], request: bytes) -> tuple[bytes, bytes] | None:
    """Writes ``request`` to the child and reads one frame; ``None`` if the child is gone."""
    assert process.stdin is not None and process.stdout is not None
    try:
        if request:
            process.stdin.write(request)
        header = _read_exactly(process.stdout.fileno(), _HEADER.size)
        if header is None:
            return None
        kind, length = _HEADER.unpack(header)
        payload = _read_exactly(process.stdout.fileno(), length)
    except (OSError, ValueError):  # a closed pipe
        return None
    return None if payload is None else (kind, payload)


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd`` (usually one read: the child writes whole frames into a
    pipe of ``_PIPE_BYTES``); ``None`` at end of file."""
    if size == 0:
        return b""
    chunk = os.read(fd, size)
    if len(chunk) == size:
        return chunk
    chunks = [chunk]
    got = len(chunk)
    while chunk and got < size:
        chunk = os.read(fd, size - got)
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks) if got == size else None


def _exit_code(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(5)
    except subprocess.TimeoutExpired:
        return None


# -- the child -------------------------------------------------------------------------


class _Child:
    """Serves one parent: prefetches batches, answers its requests in order."""

    def __init__(self, options: argparse.Namespace) -> None:
        from .kafka import KafkaEventBus

        self.bus = KafkaEventBus(options.bootstrap_servers, client_id=options.client_id)
        self.consumer = self.bus.consumer(options.group, options.topics)
        self.max_records: int = options.max_records
        self.prefetch: int = options.prefetch
        self.ready: deque[bytes] = deque()
        self.arrived = asyncio.Event()
        self.space = asyncio.Event()
        self.failure: BaseException | None = None
        # A buffered writer of its own: under PYTHONUNBUFFERED, sys.stdout.buffer is raw
        # and a write to a pipe may take only part of a frame.
        self.out = open(sys.stdout.fileno(), "wb", buffering=_PIPE_BYTES, closefd=False)  # noqa: SIM115
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.out.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.out.write(_HEADER.pack(kind, len(payload)))
        self.out.write(payload)
        self.out.flush()

    def send_error(self, error: BaseException) -> None:
        name = type(error).__name__ if type(error).__name__ in _ERRORS else "BusError"
        self.send(b"E", json.dumps({"type": name, "message": repr(error)}).encode())

    async def fill(self) -> None:
        """Keeps up to ``prefetch`` batches fetched and packed."""
        try:
            while True:
                while len(self.ready) >= self.prefetch:
                    self.space.clear()
                    await self.space.wait()
                columns = await self.consumer.fetch_columns(self.max_records, timeout_s=0.2)
                if columns:
                    self.ready.append(pack_columns(columns))
                    self.arrived.set()
        except Exception as error:  # reported on the next fetch
            self.failure = error
            self.arrived.set()

    async def next_batch(self, timeout_s: float) -> bytes:
        if not self.ready and self.failure is None:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout_s)
        if self.ready:
            payload = self.ready.popleft()
            self.space.set()
            return payload
        if self.failure is not None:
            raise self.failure
        return _COUNTS.pack(0, 0)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        requests = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
        try:
            await self.bus.start()
            await self.consumer.start()
        except Exception as error:
            self.send_error(error)
            return
        self.send(b"R")
        filler = asyncio.create_task(self.fill())
        try:
            while line := await requests.readline():  # EOF: the parent is gone
                request = json.loads(line)
                if request["op"] == "close":
                    break
                try:
                    if request["op"] == "fetch":
                        self.send(b"C", await self.next_batch(float(request["timeout_s"])))
                    else:
                        offsets = {(t, int(p)): int(o) for t, p, o in request["offsets"]}
                        await self.consumer.commit(offsets)
                        self.send(b"K")
                except Exception as error:
                    self.send_error(error)
        finally:
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filler
            await self.consumer.close()  # leaves the group, commits nothing
            await self.bus.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--client-id", default="ehr-ledger")
    parser.add_argument("--max-records", type=int, default=2000)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("topics", nargs="+")
    options = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_Child(options).serve())
    os._exit(0)  # stdout may be a closed pipe: skip flushing it at exit


if __name__ == "__main__":
    main()
