"""WebSocket fan-out: one state frame per second, built once and queued to every subscriber.

Each frame is serialized once per tick and carries `seq` (consecutive per tick) and `sent_at` (UTC
seconds when it was built), so a client measures latency and sees gaps. A subscriber that cannot keep
up holds at most `queue_size` frames: the oldest is dropped and counted (the latest state is what an
operator needs), never buffered without bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any


class Subscription:
    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0

    def offer(self, frame: str) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(frame)


class Hub:
    def __init__(self, build: Callable[[], dict[str, Any]], period_s: float = 1.0, queue_size: int = 4) -> None:
        self.build = build
        self.period_s = period_s
        self.queue_size = queue_size
        self.subscribers: set[Subscription] = set()
        self.seq = 0
        self.dropped = 0

    def subscribe(self) -> Subscription:
        sub = Subscription(self.queue_size)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        self.dropped += sub.dropped

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self.period_s
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()  # late (a long pause): restart the rhythm, don't burst
            self.seq += 1
            if not self.subscribers:
                continue
            frame = {"seq": self.seq, "sent_at": time.time(), **self.build()}
            text = json.dumps(frame, separators=(",", ":"))
            for sub in list(self.subscribers):
                sub.offer(text)
