"""The two shapes of a category (wire name, contract mask bit) are one definition: every
name has exactly one bit and one vocabulary code, in the same order on every side."""

from __future__ import annotations

from ehr_protocol.vocabulary import (
    ALL_CATEGORIES,
    CATEGORY_BITS,
    MAX_PURPOSE,
    AccessPurpose,
    Category,
    CategoryBits,
    Purpose,
)


def test_each_category_name_is_one_bit_and_one_code() -> None:
    assert [c.name for c in Category] == [c.name for c in CategoryBits]
    assert [c.bit for c in Category] == [1 << i for i in range(len(Category))]
    assert [c.code for c in Category] == list(range(1, len(Category) + 1))
    assert sum(CATEGORY_BITS.values()) == ALL_CATEGORIES == int(sum(CategoryBits))
    assert {c.value: int(CategoryBits[c.name]) for c in Category} == CATEGORY_BITS


def test_a_read_purpose_is_a_grantable_one_or_the_patients_own() -> None:
    assert {p.name: p.value for p in Purpose} == {
        p.name: p.value for p in AccessPurpose if p != AccessPurpose.PATIENT_REQUEST
    }
    assert MAX_PURPOSE == len(Purpose) < AccessPurpose.PATIENT_REQUEST
