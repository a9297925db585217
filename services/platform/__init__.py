"""The shared internal library every EHR Ledger service stands on."""
