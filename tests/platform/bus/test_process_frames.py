"""The frames a consumer process hands its parent: columns survive packing exactly."""

from __future__ import annotations

import os
import random

from services.platform.bus.port import Record, RecordColumns, next_offsets
from services.platform.bus.process import pack_columns, unpack_columns


def _records(count: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    topics = ["ehr.consent.v1", "ehr.records.v1", "ünïcode.topic", "t"]
    return [
        Record(
            topic=rng.choice(topics),
            partition=rng.randrange(0, 2**31 - 1),
            offset=rng.randrange(0, 2**63 - 1),
            key="ignored",
            value=os.urandom(rng.randrange(0, 600)),
        )
        for _ in range(count)
    ]


def test_columns_round_trip_exactly_whatever_the_bytes() -> None:
    records = _records(500, seed=7)
    records.append(Record("t", 0, 0, "", b""))  # an empty value
    records.append(Record("t", 1, 1, "", b"\n\x00" * 1000))
    columns = RecordColumns.of(records)
    assert unpack_columns(pack_columns(columns)) == columns


def test_no_records_make_empty_columns() -> None:
    columns = unpack_columns(pack_columns(RecordColumns([], [], [], [])))
    assert len(columns) == 0
    assert columns == RecordColumns([], [], [], [])


def test_next_offsets_are_one_past_each_partitions_last_record() -> None:
    records = [Record("a", 0, 5, "", b""), Record("b", 0, 9, "", b""), Record("a", 0, 6, "", b"")]
    records.append(Record("a", 1, 2, "", b""))
    columns = unpack_columns(pack_columns(RecordColumns.of(records)))
    assert columns.next_offsets() == {("a", 0): 7, ("b", 0): 10, ("a", 1): 3}
    assert next_offsets(records) == columns.next_offsets()  # the same, from records
    assert next_offsets([]) == {}


def test_take_and_concat_keep_records_whole() -> None:
    records = _records(20, seed=3)
    columns = RecordColumns.of(records)
    assert columns.take([4, 1]) == RecordColumns.of([records[4], records[1]])
    halves = [RecordColumns.of(records[:7]), RecordColumns.of(records[7:])]
    assert RecordColumns.concat(halves) == columns
