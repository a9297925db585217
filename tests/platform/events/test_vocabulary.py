"""The vocabulary's codes mean the same as the ConsentRegistry contract's encodings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ehr.vocabulary.v1 import vocabulary_pb2

from services.platform.events import vocabulary

REPO_ROOT = Path(__file__).resolve().parents[3]
CONTRACT = REPO_ROOT / "contracts" / "src" / "ConsentRegistry.sol"


def _constant(name: str) -> int:
    found = re.search(rf"\b{name}\s*=\s*(0x[0-9a-fA-F]+|[0-9]+)\s*;", CONTRACT.read_text())
    assert found, f"{name} not found in {CONTRACT}"
    return int(found.group(1), 0)


def test_every_category_is_one_contract_bit_and_code_n_is_bit_n() -> None:
    codes = [v for v in vocabulary_pb2.RecordCategory.values() if v]
    assert sorted(vocabulary.CATEGORY_BITS) == codes, "a category has no bit in the contract"
    for code, bit in vocabulary.CATEGORY_BITS.items():
        assert bit == 1 << (code - 1), vocabulary_pb2.RecordCategory.Name(code)
    all_bits = 0
    for bit in vocabulary.CATEGORY_BITS.values():
        all_bits |= bit
    assert all_bits == vocabulary.ALL_CATEGORY_BITS == _constant("ALL_CATEGORIES")


def test_the_five_categories_of_the_contract_by_name() -> None:
    assert vocabulary.categories_of(0x1F) == [
        vocabulary_pb2.RECORD_CATEGORY_LABORATORY,
        vocabulary_pb2.RECORD_CATEGORY_IMAGING,
        vocabulary_pb2.RECORD_CATEGORY_MEDICATION,
        vocabulary_pb2.RECORD_CATEGORY_NOTES,
        vocabulary_pb2.RECORD_CATEGORY_MENTAL_HEALTH,
    ]
    assert vocabulary.categories_of(8) == [vocabulary_pb2.RECORD_CATEGORY_NOTES]
    assert vocabulary.categories_of(0) == []


@pytest.mark.parametrize("mask", range(0, 32))
def test_mask_round_trip(mask: int) -> None:
    assert vocabulary.mask_of(vocabulary.categories_of(mask)) == mask


@pytest.mark.parametrize("mask", [32, 0x20 | 1, 1 << 31, -1])
def test_undefined_bits_are_refused(mask: int) -> None:
    with pytest.raises(ValueError):
        vocabulary.categories_of(mask)


def test_unspecified_category_has_no_bit() -> None:
    with pytest.raises(ValueError):
        vocabulary.mask_of([vocabulary_pb2.RECORD_CATEGORY_UNSPECIFIED])


def test_purpose_codes_are_the_contract_purpose_ids() -> None:
    names = {
        1: "PURPOSE_OF_USE_TREATMENT",
        2: "PURPOSE_OF_USE_PAYMENT",
        3: "PURPOSE_OF_USE_OPERATIONS",
        4: "PURPOSE_OF_USE_RESEARCH",
        5: "PURPOSE_OF_USE_EMERGENCY",
    }
    assert max(names) == _constant("MAX_PURPOSE")
    for purpose_id, name in names.items():
        code = vocabulary.purpose_of(purpose_id)
        assert vocabulary_pb2.PurposeOfUse.Name(code) == name
        assert vocabulary.purpose_id(code) == purpose_id
    assert sorted(vocabulary.CHAIN_PURPOSES) == sorted(names)


@pytest.mark.parametrize("purpose_id", [0, 6, 255])
def test_purposes_outside_the_contract_are_refused(purpose_id: int) -> None:
    with pytest.raises(ValueError):
        vocabulary.purpose_of(purpose_id)
    with pytest.raises(ValueError):
        vocabulary.purpose_id(vocabulary_pb2.PurposeOfUse.ValueType(purpose_id))


def test_every_role_code_has_one_name_and_back() -> None:
    defined = set(vocabulary_pb2.Role.values()) - {vocabulary_pb2.ROLE_UNSPECIFIED}
    assert set(vocabulary.ROLE_NAMES) == defined
    for name, code in vocabulary.ROLE_CODES.items():
        assert vocabulary.ROLE_NAMES[code] == name


def test_the_role_names_are_those_identity_issues_and_every_service_checks() -> None:
    from services.consent.domain.model import Role as ConsentRole
    from services.identity.domain.model import Role as IdentityRole
    from services.record_store.domain.model import Role as RecordRole

    names = set(vocabulary.ROLE_CODES)
    assert {role.value for role in IdentityRole} == names
    assert {role.value for role in RecordRole} == names
    assert {value for key, value in vars(ConsentRole).items() if key.isupper()} == names
