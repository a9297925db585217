"""Assertion that a chain action fails with a given custom error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_utils.address import is_address, to_checksum_address

from services.platform.chain.port import TransactionReverted


def expect_revert(
    error_name: str, action: Callable[[], Any], **expected_args: Any
) -> TransactionReverted:
    """Run ``action``; it must revert with the custom error ``error_name`` whose
    decoded arguments include ``expected_args``."""
    with pytest.raises(TransactionReverted) as caught:
        action()
    error = caught.value
    assert error.error_name == error_name, (error.error_name, error.reason, str(error))
    for key, value in expected_args.items():
        assert _canonical(error.error_args[key]) == _canonical(value), (key, error.error_args)
    return error


def _canonical(value: Any) -> Any:
    """Addresses compare by value whatever their letter case."""
    if isinstance(value, str) and is_address(value):
        return to_checksum_address(value)
    return value
