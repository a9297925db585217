"""Names and durations of the ``ehr consent`` commands, mapped to the contract's encodings."""

from __future__ import annotations

import pytest
from ehr_client import consent as eip712
from ehr_client.consent_client import (
    ConsentClient,
    ConsentInputError,
    category_names,
    parse_categories,
    parse_duration,
    parse_purpose,
    purpose_name,
)
from ehr_client.keys import UserKeys


@pytest.mark.parametrize(
    ("names", "mask"),
    [
        (["labs"], eip712.LABS),
        (["labs", "imaging"], eip712.LABS | eip712.IMAGING),
        (["labs,imaging"], eip712.LABS | eip712.IMAGING),
        (["Mental-Health", " notes "], eip712.MENTAL_HEALTH | eip712.NOTES),
        (["medications", "medications"], eip712.MEDICATIONS),
        (
            ["labs,imaging,medications,notes,mental-health"],
            eip712.ALL_CATEGORIES,
        ),
    ],
)
def test_categories_by_name(names: list[str], mask: int) -> None:
    assert parse_categories(names) == mask
    assert parse_categories(category_names(mask)) == mask


@pytest.mark.parametrize("names", [[], [""], ["lab"], ["labs", "x-rays"], ["mental_health"]])
def test_unknown_or_no_category_is_refused(names: list[str]) -> None:
    with pytest.raises(ConsentInputError):
        parse_categories(names)


@pytest.mark.parametrize(
    ("name", "purpose"),
    [
        ("treatment", eip712.TREATMENT),
        ("payment", eip712.PAYMENT),
        ("operations", eip712.OPERATIONS),
        ("research", eip712.RESEARCH),
        ("EMERGENCY", eip712.EMERGENCY),
    ],
)
def test_purposes_by_name(name: str, purpose: int) -> None:
    assert parse_purpose(name) == purpose
    assert purpose_name(purpose) == name.lower()


def test_unknown_purpose_is_refused() -> None:
    with pytest.raises(ConsentInputError):
        parse_purpose("marketing")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("2w", 1209600), ("1D", 86400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "1.5h", "30 days", "1y"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConsentInputError):
        parse_duration(text)


def test_a_grant_needs_exactly_one_expiry() -> None:
    keys = UserKeys.generate()
    with ConsentClient("http://127.0.0.1:9") as client:
        for expiry in ({}, {"expires_at": 2_000_000_000, "expires_in": 60}):
            with pytest.raises(ConsentInputError):
                client.grant(
                    keys,
                    "token",
                    patient_id="p",
                    grantee=UserKeys.generate().address,
                    categories=eip712.LABS,
                    purpose=eip712.TREATMENT,
                    **expiry,
                )
