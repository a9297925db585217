"""The relay's domain: the Merkle log, checkpoints and their policy; pure Python."""
