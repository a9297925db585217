"""What both sides of the wire agree on: the vocabulary, the signed-message formats and the
verification of the audit log (see protocol/README.md)."""
