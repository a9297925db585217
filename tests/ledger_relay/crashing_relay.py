"""Test entry point: the relay process, which SIGKILLs itself at a crash point.

``LEDGER_TEST_CRASH_POINT`` names the point (``before_send``, ``after_send``,
``after_receipt``, ``before_commit``) and ``LEDGER_TEST_CRASH_AT`` which passage
through it kills (1 = the first). Read here only; production code has no such switch.
"""

from __future__ import annotations

import os
import signal

from services.ledger_relay.main import main

POINT = os.environ["LEDGER_TEST_CRASH_POINT"]
AT = int(os.environ.get("LEDGER_TEST_CRASH_AT", "1"))
passages = 0


def crash_hook(point: str) -> None:
    global passages
    if point != POINT:
        return
    passages += 1
    if passages >= AT:
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(crash_hook=crash_hook)
