"""Token buckets: how often something may happen, per peer and in all, in a table that cannot grow.

A bucket holds at most `burst` tokens and gains `rate` a second; an event takes one or is
refused. The time is passed in, so the arithmetic is tested without a clock.
"""

from __future__ import annotations

from collections import OrderedDict

PEER = "peer"  # PeerBuckets.take's answers: the peer is over its own rate...
ALL = "all"  # ...or all peers together are over theirs


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        """One token if there is one: True, else False (and nothing taken)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1)


class PeerBuckets:
    """A bucket per peer and one for all of them.

    The table keeps the max_peers peers seen last: one that falls out starts again with a full
    bucket, which only a sender of many source addresses can make use of, and the bucket for
    all peers bounds what even that one gets.
    """

    def __init__(self, rate: float, burst: float, total_rate: float, total_burst: float, max_peers: int):
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self.total_rate, self.total_burst = total_rate, total_burst
        self.total: TokenBucket | None = None
        self.peers: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, peer: str, now: float) -> str | None:
        """None if the peer may have one more now (a token taken from both buckets); else PEER or ALL."""
        bucket = self.peers.pop(peer, None) or TokenBucket(self.rate, self.burst, now)
        self.peers[peer] = bucket  # now the peer seen last
        if len(self.peers) > self.max_peers:
            self.peers.popitem(last=False)
        if not bucket.take(now):
            return PEER
        if self.total is None:
            self.total = TokenBucket(self.total_rate, self.total_burst, now)
        if not self.total.take(now):
            bucket.give_back()  # refused for others' sake: the peer's own allowance stays
            return ALL
        return None
