"""One memory budget for everything requests make the server hold: bodies as they arrive, their inflated and
unpacked copies, and the slabs of propagation jobs until the job ends. A request reserves what it will hold
before it reads it; when the budget is spent it waits (up to the body timeout) for others to finish, then gets a
503 with ``Retry-After``. A reservation larger than the whole budget is a 413 at once."""
from __future__ import annotations

import asyncio
import threading
import time

from starlette.exceptions import HTTPException


class MemoryBudget:
    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._used = 0
        self._peak = 0
        self._lock = threading.Lock()

    def try_acquire(self, n: int) -> bool:
        with self._lock:
            if self._used + n > self.max_bytes:
                return False
            self._used += n
            self._peak = max(self._peak, self._used)
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self._used = max(0, self._used - int(n))

    async def acquire(self, n: int, wait_s: float, what: str) -> "Reservation":
        """Reserve ``n`` bytes, waiting up to ``wait_s`` for room (413 if ``n`` can never fit, 503 on timeout)."""
        n = int(n)
        if n > self.max_bytes:
            raise HTTPException(413, f"{what} needs {n / 2 ** 20:.0f} MB of memory on the server, more than its "
                                     f"upload memory budget of {self.max_bytes / 2 ** 20:.0f} MB: send smaller or "
                                     f"fewer slices, or start the service with a larger $SAMED_UPLOAD_MEMORY_MB",
                                headers={"Connection": "close"})
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while not self.try_acquire(n):
            if time.monotonic() >= deadline:
                raise HTTPException(503, f"the service is holding {self.max_bytes / 2 ** 20:.0f} MB of other "
                                         f"uploads and had no room for {what} within {wait_s:g} s: try again",
                                    headers={"Retry-After": "5"})
            await asyncio.sleep(delay)
            delay = min(0.1, delay * 2)
        return Reservation(self, n)

    def stats(self) -> dict:
        with self._lock:
            return {"max_bytes": self.max_bytes, "used_bytes": self._used, "peak_bytes": self._peak}


class Reservation:
    """Bytes held from a :class:`MemoryBudget`; ``release()`` once (idempotent), or grow with ``add``."""

    def __init__(self, budget: MemoryBudget, n: int):
        self.budget = budget
        self.n = n
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            n, self.n = self.n, 0
        if n:
            self.budget.release(n)

    def split(self, n: int) -> "Reservation":
        """Move ``n`` of these bytes (at most all) to a new reservation, released on its own."""
        with self._lock:
            n = min(int(n), self.n)
            self.n -= n
        return Reservation(self.budget, n)

    def shrink_to(self, n: int) -> None:
        """Keep at most ``n`` bytes; the rest goes back to the budget."""
        with self._lock:
            extra = max(0, self.n - max(0, int(n)))
            self.n -= extra
        if extra:
            self.budget.release(extra)
