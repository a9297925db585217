"""The ledger relay: an RFC 9162 Merkle log of every event hash, anchored on chain."""
