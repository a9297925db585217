"""Event envelope codec, event catalogue and topics, shared by every service."""
