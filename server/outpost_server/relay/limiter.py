"""Token bucket with the clock passed in (no time source of its own)."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; starts full.

    Same shape as golang.org/x/time/rate.NewLimiter(rate.Every(1/rate), burst),
    which derper uses for PeerGone(NotHere) replies.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Take one token at time `now` (seconds, monotonic) if one is available."""
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
