"""Retry policy: a frozen value object and the one function that computes backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, and the attempt after which a row is dead."""

    max_attempts: int = 10
    initial_delay: float = 1.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2  # fraction of the delay added or removed at random (never beyond max_delay)

    def delay(self, attempts: int, rng: random.Random | None = None, asked: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based). ``asked``: how long
        the partner asked the hub to wait (HTTP Retry-After on a 429 or 503), waited if longer than
        the backoff, so a partner shedding load is not hit again before it said it can take more;
        never beyond ``max_delay``, so an absurd or hostile value cannot park a row for years."""
        try:
            base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempts - 1))
        except OverflowError:  # a policy of many attempts: the power outgrows a float long after max_delay
            base = self.max_delay
        spread = base * self.jitter
        backoff = min(self.max_delay, max(0.0, base + (rng or random).uniform(-spread, spread)))
        if asked is None or not asked >= 0:  # none, negative or NaN: the backoff alone
            return backoff
        return max(backoff, min(asked, self.max_delay))

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
