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
import sys
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import accumulate, pairwise
from types import TracebackType
from typing import Self

from .errors import BusClosedError, BusError, CommitError
from .port import Record, RecordColumns

_HEADER = struct.Struct("<cI")
_COUNTS = struct.Struct("<II")
_PIPE_BYTES = 1 << 20
_ERRORS: dict[str, type[BusError]] = {
    "CommitError": CommitError,
    "BusClosedError": BusClosedError,
}


def pack_columns(records: Sequence[Record]) -> bytes:
    """One ``C`` payload: counts, topic names, then topic index, partition, offset and
    value length per record (native arrays) and the values end to end."""
    names: dict[str, int] = {}
    topic_index = array("H", [names.setdefault(r.topic, len(names)) for r in records])
    values = [r.value for r in records]
    name_bytes = "\n".join(names).encode()
    return b"".join(
        (
            _COUNTS.pack(len(records), len(name_bytes)),
            name_bytes,
            topic_index.tobytes(),
            array("i", [r.partition for r in records]).tobytes(),
            array("q", [r.offset for r in records]).tobytes(),
            array("I", map(len, values)).tobytes(),
            *values,
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


class ProcessConsumer:
    """A member of Kafka consumer group ``group`` running in a child process (see the
    module docstring); a ``ColumnConsumer``."""

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
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._abandoned = False
        """A request's answer was not read (cancelled): the next answer would be its, so
        the consumer refuses further requests (records fetched for it would otherwise be
        skipped by a later commit)."""

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` when not started)."""
        return None if self._process is None else self._process.pid

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._process is not None:
            return
        self._abandoned = False
        self._process = await asyncio.create_subprocess_exec(
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
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_PIPE_BYTES,
        )
        try:
            kind, _ = _answer(*await asyncio.wait_for(self._read_frame(), self.start_timeout_s))
        except (TimeoutError, BusError):
            await self.close()
            raise
        if kind != b"R":  # pragma: no cover - the child answers R or E
            await self.close()
            raise BusClosedError(f"consumer process of group {self.group}: unexpected {kind!r}")

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ConnectionError):
                assert process.stdin is not None
                process.stdin.write(b'{"op": "close"}\n')
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()

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
            process = self._process
            if process is None or process.stdin is None:
                raise BusClosedError(f"consumer process of group {self.group} is not started")
            if self._abandoned:
                raise BusClosedError(
                    f"consumer process of group {self.group}: a request was cancelled "
                    "before its answer was read; close it and start a new one"
                )
            self._abandoned = True  # until the answer is read whole
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                await process.stdin.drain()
            except ConnectionError as exc:
                raise await self._ended() from exc
            kind, payload = await self._read_frame()
            self._abandoned = False
            return _answer(kind, payload)

    async def _read_frame(self) -> tuple[bytes, bytes]:
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            kind, length = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
            payload = await process.stdout.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise await self._ended() from exc
        return kind, payload

    async def _ended(self) -> BusClosedError:
        process = self._process
        code = None
        if process is not None:
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(process.wait(), 5)
        return BusClosedError(f"consumer process of group {self.group} ended (exit code {code})")


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
                records = await self.consumer.fetch(self.max_records, timeout_s=0.2)
                if records:
                    self.ready.append(pack_columns(records))
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
