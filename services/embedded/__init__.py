"""The embedded default: the five services in one process behind one gateway app."""
