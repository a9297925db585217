"""The one readiness outcome that every platform part may report: degraded.

It lives outside the platform's ports (app, bus, chain), which stay independent of each
other: the bus's quarantine check raises it, the app factory's ``/readyz`` reports it.
"""

from __future__ import annotations


class Degraded(Exception):
    """Raised by a readiness check when the service still serves but is degraded (e.g. a
    projection quarantined records it could not apply): ``/readyz`` answers 200 with
    ``status: degraded`` and the check's message, so traffic keeps flowing and the
    operator sees it."""
