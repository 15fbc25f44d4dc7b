"""Token buckets for per-connection rate limits and admission control of new sessions."""

from __future__ import annotations

import time
from collections.abc import Callable


def check_rule(what: str, rate: float, burst: float) -> None:
    """Refuse a rule no bucket can keep: `rate` per second must be positive and `burst` at least one."""
    if rate <= 0 or burst < 1:
        raise ValueError(f'{what} needs rate > 0 and burst >= 1 (got rate={rate}, burst={burst})')


def refilled(tokens: float, stamp: float, now: float, rate: float, burst: float) -> float:
    """What a bucket holding `tokens` at `stamp` holds at `now` (`rate` per second, at most `burst`)."""
    return min(burst, tokens + (now - stamp) * rate)


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`. The clock is injectable for pure tests."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        check_rule('token bucket', rate, burst)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = refilled(self._tokens, self._stamp, now, self.rate, self.burst)
        self._stamp = now

    def try_take(self, amount: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def take_delay(self, amount: float = 1.0) -> float:
        """Take `amount` now (going into debt) and return how many seconds the caller should pause to repay it."""
        self._refill()
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class FailureLimiter:
    """Failed authentications per source address: each address may fail `burst` times at once, then `rate` times
    per second; beyond, `retry_after(address)` is positive and the gateway refuses that address without checking
    any token. At most `max_addresses` are remembered (the least recently failing are forgotten first)."""

    def __init__(
        self, rate: float, burst: float, *, max_addresses: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        check_rule('failure limiter', rate, burst)
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self._clock = clock
        self._allowance: dict[str, tuple[float, float]] = {}
        """address -> (failures it may still have, when that was computed); insertion order = least recent first."""

    def _current(self, address: str) -> float:
        left, stamp = self._allowance.get(address, (self.burst, 0.0))
        return refilled(left, stamp, self._clock(), self.rate, self.burst)

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again (0: it may now)."""
        if address not in self._allowance:
            return 0.0
        left = self._current(address)
        return 0.0 if left >= 1 else (1 - left) / self.rate

    def record(self, address: str) -> None:
        left = self._current(address) - 1
        self._allowance.pop(address, None)
        self._allowance[address] = (left, self._clock())
        while len(self._allowance) > self.max_addresses:
            del self._allowance[next(iter(self._allowance))]
