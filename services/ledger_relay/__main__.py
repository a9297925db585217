"""``python -m services.ledger_relay``: the relay loop and its proofs API (see ``main``)."""

from services.ledger_relay.main import main

if __name__ == "__main__":
    main()
