"""EHR Ledger client SDK: keys stay with the user; every client-side action lives here."""
