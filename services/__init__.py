"""EHR Ledger services and their shared internal library."""
