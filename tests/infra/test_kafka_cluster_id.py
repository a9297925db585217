"""Kafka cluster ids made by the stack: what the storage tool takes as ``-t ID``."""

from __future__ import annotations

import base64

from devstack.kafka import new_cluster_id


def test_cluster_ids_are_16_bytes_of_url_safe_base64_and_never_start_with_a_dash() -> None:
    ids = [new_cluster_id() for _ in range(20_000)]  # ~1 in 64 raw draws starts with "-"
    assert len(set(ids)) == len(ids)
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
