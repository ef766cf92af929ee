"""A stream's own clock, from the PCRs in its MPEG-TS packets, and a pacer that keeps to it.

A relay passes an origin's bytes on as they come, which is real time only if the origin
paces. One that does not (a static .ts file served over HTTP, a misbehaving server) would
deliver at whatever the network carries. The PCR (program clock reference, 27 MHz, in the
adaptation field) says when each byte is due at the decoder; `Pacer` turns that into how
long to wait before passing a piece on. Bytes in, seconds out: no socket, no clock of its own.
"""

from __future__ import annotations

TS_PACKET_SIZE = 188
SYNC_BYTE = 0x47
PCR_HZ = 27_000_000
PCR_WRAP = (1 << 33) * 300  # the 33-bit base in 90 kHz units, times 300: about 26.5 hours
# ISO/IEC 13818-1 wants a PCR at least every 100 ms; a step of more than this is a jump
# (a looped file starting over, a spliced source), not time passing.
MAX_PCR_STEP = 1.0
# A stream that carries no clock cannot be paced: this many bytes without a PCR (or without
# two PCRs a sane step apart) and it is refused. At 80 Mbit/s this is still 200 ms.
NO_CLOCK_BYTES = 2 * 1024 * 1024


class NoClock(ValueError):
    """The stream carries no usable PCR, so nothing says how fast it should go."""


def pcr_of(packet: bytes | memoryview, at: int = 0) -> tuple[int, int, bool] | None:
    """(PID, PCR in 27 MHz ticks, discontinuity_indicator) of the packet at `at`; None without a PCR."""
    if packet[at] != SYNC_BYTE or not packet[at + 3] & 0x20 or packet[at + 4] < 7 or not packet[at + 5] & 0x10:
        return None
    b = packet[at + 6:at + 12]
    base = b[0] << 25 | b[1] << 17 | b[2] << 9 | b[3] << 1 | b[4] >> 7
    extension = (b[4] & 1) << 8 | b[5]
    pid = (packet[at + 1] & 0x1F) << 8 | packet[at + 2]
    return pid, base * 300 + extension, bool(packet[at + 5] & 0x80)


class Pacer:
    """How long to hold each piece of an aligned TS stream so that it goes out at its own rate.

    The stream may run up to `ahead_seconds` ahead of real time (a joiner's burst from the
    origin, network jitter); beyond that, a piece waits. Time the stream is late earns it no
    credit: after a stall it may catch up by `ahead_seconds`, not by the whole stall.

    The clock is the first PID seen carrying a PCR. A jump in it (backwards, or more than
    MAX_PCR_STEP forwards) counts as the time its bytes take at the stream's rate so far, so
    a looped file is paced across the loop too.
    """

    def __init__(self, ahead_seconds: float, no_clock_bytes: int = NO_CLOCK_BYTES):
        self.ahead_seconds = ahead_seconds
        self.no_clock_bytes = no_clock_bytes
        self._partial = b""  # the start of a packet that the next piece completes
        self._pid: int | None = None
        self._last_pcr = 0
        self._since_pcr = 0  # bytes since the last PCR (all of them, before the first)
        self._seen = 0  # bytes in all
        self._timed_bytes = 0  # bytes and seconds of the sane PCR steps: the stream's rate
        self._timed_seconds = 0.0
        self._lead = 0.0  # stream seconds passed on ahead of real time...
        self._lead_at: float | None = None  # ...as of this monotonic time

    @property
    def bytes_per_second(self) -> float | None:
        """The stream's rate by its own clock; None until it has shown one."""
        return self._timed_bytes / self._timed_seconds if self._timed_seconds else None

    def feed(self, data: bytes | memoryview, now: float) -> float:
        """Seconds to wait, from `now`, before passing `data` on; NoClock if the stream has none."""
        lead = 0.0 if self._lead_at is None else max(0.0, self._lead - (now - self._lead_at))
        data = self._partial + bytes(data)
        whole = len(data) - len(data) % TS_PACKET_SIZE
        self._partial = data[whole:]
        self._seen += whole
        for at in range(0, whole, TS_PACKET_SIZE):
            self._since_pcr += TS_PACKET_SIZE
            found = pcr_of(data, at)
            if found is None:
                continue
            pid, pcr, discontinuity = found
            if self._pid is None:
                self._pid, self._last_pcr, self._since_pcr = pid, pcr, 0
                continue
            if pid != self._pid:
                continue
            step = (pcr - self._last_pcr) % PCR_WRAP / PCR_HZ
            if 0 < step <= MAX_PCR_STEP and not discontinuity:
                self._timed_bytes += self._since_pcr
                self._timed_seconds += step
            else:
                rate = self.bytes_per_second
                step = self._since_pcr / rate if rate else 0.0
            lead += step
            self._last_pcr, self._since_pcr = pcr, 0
        if self._since_pcr > self.no_clock_bytes:
            raise NoClock(f"no PCR in {self.no_clock_bytes // 1024} KiB of stream: nothing says how fast it plays")
        if not self._timed_seconds and self._seen > self.no_clock_bytes:
            raise NoClock(f"no two PCRs a sane step apart in {self.no_clock_bytes // 1024} KiB of stream")
        wait = max(0.0, lead - self.ahead_seconds)
        self._lead, self._lead_at = lead - wait, now + wait
        return wait
