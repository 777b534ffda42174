"""Random ids for calls, spans and reservations.

Ids need to be unique, not secret, so they come from `random` as in the
OpenTelemetry SDK's id generator. `uuid.uuid4` reads os.urandom, which
costs over 100 us a call on some virtual machines.
"""

from __future__ import annotations

import random


def random_hex(bits: int = 128) -> str:
    """Return `bits` random bits as lowercase hex digits, zero-padded."""
    return f"{random.getrandbits(bits):0{bits // 4}x}"
