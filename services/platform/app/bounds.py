"""The domains of numbers and times at the edge: what storage, the contracts and Python
can all hold.

A route's parameter or body field uses one of these types instead of a bare ``int`` or
``datetime``, so a value no layer behind it can represent is refused with 422 (and its
bounds are stated in the OpenAPI document) before anything is relayed, stored or
computed:

- ``Int64``/``NonNegativeInt64``/``PositiveInt64``: 64-bit signed integers (SQLite and
  PostgreSQL ``BIGINT``);
- ``Instant``: a date-time that stays within the years 1..9999 once shifted to UTC (a
  naive value is read as UTC), returned in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
PositiveInt64 = Annotated[int, Field(ge=1, le=INT64_MAX)]


def in_utc(value: datetime) -> datetime:
    """``value`` in UTC; refuses one that leaves the years 1..9999 when shifted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time outside the years 1..9999 once shifted to UTC") from None


Instant = Annotated[
    datetime,
    AfterValidator(in_utc),
    Field(description="RFC 3339 date-time; within the years 1..9999 in UTC"),
]
