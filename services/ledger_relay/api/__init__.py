"""HTTP API of the ledger relay: proofs and checkpoints (thin routers over ``ProofService``)."""
