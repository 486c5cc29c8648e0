"""Seeds derived from (seed, purpose, position...), never from global state carried across
steps, so a resumed run draws the same numbers. Two derivations, kept apart on purpose:
changing either would change every resumed run's numbers.

    engine_seed(seed, "ta", request_id, attempt)   # 31 bits (sha256, parts joined by "/"):
                                                   # the loop's seeds, TA sampling, student init
    student_seed(seed, "step", epoch, step)        # 63 bits (blake2b, parts joined by ":"):
                                                   # a student's data order and per-step seeds
"""

from __future__ import annotations

import hashlib


def engine_seed(*parts: object) -> int:
    """A stable 31-bit seed (fits any int32 API, e.g. a TA's sampling seed), independent of
    PYTHONHASHSEED."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def student_seed(*parts: object) -> int:
    """A stable 63-bit seed for torch generators, e.g. student_seed(seed, "order", epoch)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
