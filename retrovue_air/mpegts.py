"""Sans-IO MPEG-TS scanner that finds where a newly joining viewer should start.

The HTTP front feeds every chunk it reads from a channel's ffmpeg into one
``TsScanner`` per channel; when a viewer connects it asks ``join_point`` for the
bytes to send first (PAT+PMT) and the absolute offset in the shared buffer to
start the viewer's cursor at (the most recent video GOP start).  No sockets, no
clocks: bytes in, facts out.

What real ffmpeg (libavformat/mpegtsenc.c, checked against 5.1 output) does,
and what this module relies on:

* Before the first TS packet of a video keyframe PES, the muxer forces a
  PAT+PMT retransmission (``force_pat``) -- but only when the *previous* video
  frame was not a keyframe (``!prev_payload_key``).  So for ordinary GOPs the
  stream already reads ``PAT PMT [PCR-only/null/SDT packets] keyframe`` and a viewer
  can start exactly at that PAT with no spliced bytes.  For all-intra video
  (``-g 1``) only the periodic (~100 ms) PAT/PMT exist, so we must prepend
  copies.
* It sets ``random_access_indicator`` on the keyframe's first packet, and with
  ``-muxrate`` (CBR) it puts adaptation-only PCR packets, null packets and
  sometimes an SDT between the PMT and the keyframe.  ``-c copy`` remuxing
  (same settings) reproduces the input byte for byte.
* PAT/PMT are also retransmitted *inside* a video PES (the muxer checks the
  period before every TS packet), so "the current PAT" must be tracked per
  offset, not per frame.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

TS_PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
NULL_PID = 0x1FFF
# A null packet: payload only, stuffing. Every demuxer drops it unread (ISO/IEC 13818-1 2.4.3.3).
NULL_PACKET = bytes((SYNC_BYTE, NULL_PID >> 8, NULL_PID & 0xFF, 0x10)) + b"\xff" * (TS_PACKET_SIZE - 4)
# PIDs up to 0x1F carry PSI/SI tables (ISO/IEC 13818-1 table 2-3, DVB SI): an
# SDT between the PMT and the keyframe, as ffmpeg's CBR mode emits, is harmless.
LAST_SI_PID = 0x1F

# Remembered random-access points.  At one keyframe per second this is a minute
# of buffer; all-intra streams simply keep the newest 64, which is still plenty
# to pick "the most recent one".
MAX_RANDOM_ACCESS_POINTS = 64
# PAT/PMT snapshots for the fallback join, one per PSI packet (ffmpeg sends
# ~20/s, so ~12 s); the fallback only needs the one current at `newest`.
MAX_PSI_HISTORY = 256
# How many TS packets of a video PES we scan for the first picture NAL unit
# when the muxer did not set random_access_indicator.  x265 repeats a ~2.3 KB
# settings SEI before every IRAP picture (~14 packets in); past this limit the
# parameter sets seen so far decide.
MAX_SCAN_PACKETS = 24
# A PAT or PMT section is at most 1024 bytes, i.e. 6 TS packets.
MAX_PSI_PACKETS = 8

_START_CODE = b"\x00\x00\x01"

# Byte translations to one flag (1 = Python must look at the packet) per header byte.
_NOT_SYNC = bytes(0 if b == SYNC_BYTE else 1 for b in range(256))
_UNIT_START = bytes(1 if b & 0x40 else 0 for b in range(256))  # payload_unit_start_indicator
_ADAPTATION = bytes(1 if b & 0x20 else 0 for b in range(256))  # an adaptation field (PCR, RAI)

# PMT stream_type -> how to recognise a random-access access unit.
_VIDEO_STREAM_TYPES = {
    0x1B: "h264",
    0x24: "hevc",
    0x02: "mpeg2",
    0x01: "mpeg2",  # MPEG-1 video uses the same start codes
}


class JoinPoint(NamedTuple):
    prefix: bytes  # bytes the viewer gets before the shared stream (b"" when the stream at `offset` already begins with PAT+PMT)
    offset: int  # absolute, packet-aligned offset in the shared stream where the viewer's cursor starts
    at_keyframe: bool  # False when this is the fallback (no keyframe in range)


class _Psi(NamedTuple):
    """The newest complete PAT and PMT before some stream position.

    ``pat_cc``/``pmt_cc`` are the continuity counters of the last packet seen on
    those PIDs before that position, which is not necessarily the last packet of
    the stored table (a newer table may have been half-sent).
    """

    pat: tuple[bytes, ...]
    pmt: tuple[bytes, ...]
    pat_cc: int
    pmt_cc: int

    def prefix(self) -> bytes:
        # The copies are the first packets the viewer sees on PID 0 / the PMT
        # PID, so their own CC is arbitrary; what matters is the step from the
        # last copy to the next real PAT/PMT after the join offset, which will
        # carry (cc of the last one before the offset) + 1.  Giving the last
        # copy exactly that "last before" CC makes the step +1, i.e. no error.
        # The alternative, a discontinuity_indicator, would have to sit on the
        # *next real* packet (it marks the packet it is in), which lives in the
        # shared buffer and can't be altered per viewer; it would also need an
        # adaptation field that a full PMT packet has no room for.
        return _with_cc(self.pat, self.pat_cc) + _with_cc(self.pmt, self.pmt_cc)


class _RandomAccess(NamedTuple):
    offset: int  # the TS packet that starts the keyframe's PES
    clean_start: int | None  # PAT of an unbroken PAT+PMT run right before it, if any
    psi: _Psi


class _PendingScan(NamedTuple):
    offset: int
    clean_start: int | None
    psi: _Psi
    tail: bytes  # last bytes of ES scanned so far, so split start codes are found
    packets: int
    saw_parameter_set: bool


class _Table:
    """Collects the packets of one PSI section (PAT or PMT) on one PID."""

    __slots__ = ("packets", "data", "last_cc", "table")

    def __init__(self) -> None:
        self.packets: list[bytes] = []  # packets of the section being collected
        self.data = b""
        self.last_cc = -1  # CC of the newest packet on the PID, complete or not
        self.table: tuple[bytes, ...] = ()  # packets of the newest complete section

    def add(self, packet: bytes, pusi: bool, payload_at: int) -> bytes | None:
        """Return the section once its last byte has arrived (and keep its packets in `table`)."""
        self.last_cc = packet[3] & 0x0F
        if pusi:
            pointer = packet[payload_at]
            self.packets = [packet]
            self.data = packet[payload_at + 1 + pointer :]
        elif self.packets and len(self.packets) < MAX_PSI_PACKETS:
            self.packets.append(packet)
            self.data += packet[payload_at:]
        else:
            return None
        if len(self.data) < 3:
            return None
        total = 3 + (((self.data[1] & 0x0F) << 8) | self.data[2])
        if len(self.data) < total:
            return None
        section = self.data[:total]
        self.table = tuple(self.packets)
        self.packets, self.data = [], b""
        return section


class TsScanner:
    """Per-channel scanner: feed it the stream, ask it where viewers may join."""

    def __init__(self) -> None:
        self._started = False
        self._end = 0  # absolute offset just past the last byte fed
        self._partial = b""  # bytes of an incomplete trailing packet (< 188)

        self._pat = _Table()
        self._pmt = _Table()
        self._pat_packets: tuple[bytes, ...] | None = None
        self._pmt_packets: tuple[bytes, ...] | None = None
        self._pat_bytes = b""  # last parsed PAT section, to skip re-parsing repeats
        self._pmt_bytes = b""
        self._pmt_pid: int | None = None
        self._video_pid: int | None = None
        self._video_kind = ""
        self._psi: _Psi | None = None
        self._psi_history: deque[tuple[int, _Psi]] = deque(maxlen=MAX_PSI_HISTORY)

        # A run of PAT/PMT packets with no elementary-stream payload after it
        # (SI, null and adaptation-only packets allowed, as in ffmpeg's CBR
        # output) that a keyframe may follow.
        self._run_start: int | None = None
        self._run_has_pat = False
        self._run_has_pmt = False

        self._rai_armed = False
        self._pending: _PendingScan | None = None
        self._raps: deque[_RandomAccess] = deque(maxlen=MAX_RANDOM_ACCESS_POINTS)
        self.sync_errors = 0

    # -- facts ---------------------------------------------------------------

    @property
    def pmt_pid(self) -> int | None:
        return self._pmt_pid

    @property
    def video_pid(self) -> int | None:
        return self._video_pid

    @property
    def random_access_points(self) -> list[int]:
        """Offsets of the keyframe-starting packets still remembered, oldest first."""
        return [rap.offset for rap in self._raps]

    # -- input ---------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """data: bytes/memoryview newly appended to the stream at absolute `offset` (== everything fed so far, contiguous).
        Arbitrary length, not necessarily a multiple of 188: keep the partial packet (at most 187 bytes copied) for next time.
        """
        if not self._started:
            # A scanner may be attached to a channel that is already running,
            # as long as it starts on a packet boundary.
            if offset % TS_PACKET_SIZE:
                raise ValueError(f"first feed must be packet-aligned, got offset {offset}")
            self._started = True
            self._end = offset
        elif offset != self._end:
            raise ValueError(f"non-contiguous feed: expected offset {self._end}, got {offset}")

        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = len(view)
        self._end = offset + size
        pos = 0
        if self._partial:
            need = TS_PACKET_SIZE - len(self._partial)
            if size < need:
                self._partial += bytes(view)
                return
            packet = self._partial + bytes(view[:need])
            self._partial = b""
            self._packet(packet, 0, offset - (TS_PACKET_SIZE - need))
            pos = need
        whole_end = pos + (size - pos) // TS_PACKET_SIZE * TS_PACKET_SIZE
        self._packets(view, pos, whole_end, offset)
        if whole_end < size:
            self._partial = bytes(view[whole_end:])

    # -- output --------------------------------------------------------------

    def join_point(self, oldest: int, newest: int) -> JoinPoint | None:
        """The best place for a new viewer to start, using only stream bytes in [oldest, newest) (what the buffer still holds and has published; both packet-aligned).
        Preferred: the most recent video random-access point (GOP start) >= oldest, with PAT+PMT before it. Fallback when no keyframe is in range: the latest packet boundary <= newest preceded by PAT/PMT (prefix = current PAT+PMT), at_keyframe=False. None when nothing is known yet (no PAT/PMT seen).

        Keyframe join: offset is the stream's own PAT when an unbroken PAT+PMT
        run leads to the keyframe and lies in range (prefix b""); otherwise
        offset is the keyframe packet and prefix holds PAT+PMT copies.
        Fallback: offset == newest, prefix = PAT+PMT as they stood at `newest`.
        Also None if `newest` is older than the retained PSI history.
        Pure: does not change the scanner.
        """
        for rap in reversed(self._raps):
            if rap.offset >= newest:
                continue
            if rap.offset < oldest:
                break
            if rap.clean_start is not None and rap.clean_start >= oldest:
                return JoinPoint(b"", rap.clean_start, True)
            return JoinPoint(rap.psi.prefix(), rap.offset, True)

        # No keyframe in range: start at the live edge.  The player discards
        # data until the next keyframe anyway, so older bytes only add latency.
        for valid_from, psi in reversed(self._psi_history):
            if valid_from <= newest:
                return JoinPoint(psi.prefix(), newest, False)
        return None

    def earliest_join_point(self, oldest: int, newest: int) -> JoinPoint | None:
        """The oldest keyframe join in [oldest, newest): the longest burst the buffer can give."""
        for rap in self._raps:
            if rap.offset < oldest:
                continue
            if rap.offset >= newest:
                break
            if rap.clean_start is not None and rap.clean_start >= oldest:
                return JoinPoint(b"", rap.clean_start, True)
            return JoinPoint(rap.psi.prefix(), rap.offset, True)
        return None

    # -- per packet ----------------------------------------------------------

    def _packets(self, view: memoryview, start: int, end: int, offset: int) -> None:
        """Scan the whole packets in view[start:end], view[0] being at stream `offset`.

        Most packets cannot change anything: a video or audio packet that neither
        starts a PES nor carries an adaptation field, while no PAT/PMT run is open,
        no access unit is being classified and no PSI section is half collected.
        Those are skipped in C (strided copies of the header bytes, translated to
        one flag byte per packet): on a 2 Mbit/s channel Python looks at one packet
        in nine (PES starts, PCRs), and the scan costs 0.76 ms per MB instead of 1.9.
        """
        count = (end - start) // TS_PACKET_SIZE
        if not count:
            return
        flags = (int.from_bytes(bytes(view[start:end:TS_PACKET_SIZE]).translate(_NOT_SYNC), "big")
                 | int.from_bytes(bytes(view[start + 1:end:TS_PACKET_SIZE]).translate(_UNIT_START), "big")
                 | int.from_bytes(bytes(view[start + 3:end:TS_PACKET_SIZE]).translate(_ADAPTATION), "big"))
        look = flags.to_bytes(count, "big")
        k = 0
        while k < count:
            if (self._run_start is None and self._pending is None
                    and not self._pat.packets and not self._pmt.packets):
                k = look.find(1, k)
                if k < 0:
                    return
            i = start + k * TS_PACKET_SIZE
            self._packet(view, i, offset + i)
            k += 1

    def _packet(self, buf: bytes | memoryview, i: int, offset: int) -> None:
        # Packet boundaries are fixed by contract (offset % 188 == 0), so a bad
        # sync byte means a damaged packet, not a cue to hunt for 0x47.
        if buf[i] != SYNC_BYTE:
            self.sync_errors += 1
            self._run_start = None
            return
        b1 = buf[i + 1]
        pid = ((b1 & 0x1F) << 8) | buf[i + 2]
        afc = buf[i + 3] & 0x30

        if pid == self._video_pid:
            self._video_packet(buf, i, offset, b1 & 0x40, afc)
        elif pid == PAT_PID or pid == self._pmt_pid:
            if afc & 0x10:
                self._psi_packet(bytes(buf[i : i + TS_PACKET_SIZE]), pid, bool(b1 & 0x40), offset)
        elif afc & 0x10 and pid > LAST_SI_PID and pid != NULL_PID:
            self._run_start = None

    def _psi_packet(self, packet: bytes, pid: int, pusi: bool, offset: int) -> None:
        payload_at = _payload_at(packet, 0, packet[3] & 0x30)
        if payload_at >= TS_PACKET_SIZE:
            return
        if pid == PAT_PID:
            if pusi and self._run_start is None:
                self._run_start = offset
                self._run_has_pat = self._run_has_pmt = False
            section = self._pat.add(packet, pusi, payload_at)
            if section is not None:
                self._pat_packets = self._pat.table
                if section != self._pat_bytes:
                    self._pat_bytes = section
                    self._parse_pat(section)
                self._run_has_pat = True
        else:
            section = self._pmt.add(packet, pusi, payload_at)
            if section is not None:
                self._pmt_packets = self._pmt.table
                if section != self._pmt_bytes:
                    self._pmt_bytes = section
                    self._parse_pmt(section)
                self._run_has_pmt = self._run_has_pat

        if self._pat_packets and self._pmt_packets:
            self._psi = _Psi(self._pat_packets, self._pmt_packets, self._pat.last_cc, self._pmt.last_cc)
            self._psi_history.append((offset + TS_PACKET_SIZE, self._psi))

    def _parse_pat(self, section: bytes) -> None:
        if section[0] != 0x00:
            return
        # Entries run up to the CRC_32; program_number 0 points at the NIT.
        for j in range(8, len(section) - 4 - 3, 4):
            program = (section[j] << 8) | section[j + 1]
            if program:
                pmt_pid = ((section[j + 2] & 0x1F) << 8) | section[j + 3]
                if pmt_pid != self._pmt_pid:
                    self._pmt_pid = pmt_pid
                    self._pmt = _Table()
                    self._pmt_packets = None
                    self._pmt_bytes = b""
                    self._psi = None
                return

    def _parse_pmt(self, section: bytes) -> None:
        if section[0] != 0x02 or len(section) < 16:
            return
        end = len(section) - 4
        j = 12 + (((section[10] & 0x0F) << 8) | section[11])
        while j + 5 <= end:
            kind = _VIDEO_STREAM_TYPES.get(section[j])
            if kind is not None:
                pid = ((section[j + 1] & 0x1F) << 8) | section[j + 2]
                if pid != self._video_pid:
                    self._video_pid = pid
                    self._pending = None
                    self._rai_armed = False
                self._video_kind = kind
                return
            j += 5 + (((section[j + 3] & 0x0F) << 8) | section[j + 4])

    def _video_packet(self, buf: bytes | memoryview, i: int, offset: int, pusi: int, afc: int) -> None:
        if afc & 0x20 and buf[i + 4] and buf[i + 5] & 0x40:
            # ISO/IEC 13818-1 2.4.3.5: with random_access_indicator set, the
            # next PES of this PID (possibly starting in this very packet)
            # begins with an elementary stream access point.
            self._rai_armed = True
        if not afc & 0x10:
            return  # adaptation-only (e.g. ffmpeg CBR PCR packets): not a run breaker
        clean_start = self._run_start if self._run_has_pmt else None
        self._run_start = None
        payload_at = _payload_at(buf, i, afc)
        end = i + TS_PACKET_SIZE

        if not pusi:
            pending = self._pending
            if pending is not None:
                es = pending.tail + bytes(buf[payload_at:end])
                self._settle(pending._replace(tail=es[-3:], packets=pending.packets + 1), es)
            return

        pending, self._pending = self._pending, None
        if pending is not None and pending.saw_parameter_set:
            # That PES ended before its first picture NAL; same trust as in _settle.
            self._raps.append(_RandomAccess(pending.offset, pending.clean_start, pending.psi))
        psi = self._psi
        if psi is None:
            self._rai_armed = False
            return
        if self._rai_armed:
            self._rai_armed = False
            self._raps.append(_RandomAccess(offset, clean_start, psi))
            return
        pes = bytes(buf[payload_at:end])
        if len(pes) < 9 or not pes.startswith(_START_CODE):
            return
        es = pes[9 + pes[8] :]
        self._settle(_PendingScan(offset, clean_start, psi, es[-3:], 1, False), es)

    def _settle(self, scan: _PendingScan, es: bytes) -> None:
        verdict, saw_parameter_set = _classify_access_unit(es, self._video_kind)
        saw_parameter_set = saw_parameter_set or scan.saw_parameter_set
        if verdict is None and scan.packets >= MAX_SCAN_PACKETS:
            # The spec'd marker (the slice type) is out of reach; parameter sets
            # are only repeated at GOP starts by common encoders, so trust them.
            verdict = saw_parameter_set
        if verdict:
            self._raps.append(_RandomAccess(scan.offset, scan.clean_start, scan.psi))
        self._pending = scan._replace(saw_parameter_set=saw_parameter_set) if verdict is None else None


def _payload_at(buf: bytes | memoryview, i: int, afc: int) -> int:
    return i + 5 + buf[i + 4] if afc & 0x20 else i + 4


def _classify_access_unit(es: bytes, kind: str) -> tuple[bool | None, bool]:
    """(random access?, parameter set seen) for the start of an access unit.

    The verdict is None until the first picture NAL unit is in `es`.
    """
    saw_parameter_set = False
    at = es.find(_START_CODE)
    while at != -1 and at + 3 < len(es):
        header = es[at + 3]
        if kind == "h264":
            nal = header & 0x1F
            if nal == 5:  # IDR slice
                return True, saw_parameter_set
            if 1 <= nal <= 4:  # non-IDR slice / data partition
                return False, saw_parameter_set
            saw_parameter_set = saw_parameter_set or nal == 7  # SPS
        elif kind == "hevc":
            nal = (header >> 1) & 0x3F
            if 16 <= nal <= 21:  # IRAP: BLA, IDR, CRA
                return True, saw_parameter_set
            if nal <= 15:  # any other VCL NAL
                return False, saw_parameter_set
            saw_parameter_set = saw_parameter_set or nal == 32 or nal == 33  # VPS, SPS
        else:
            if header == 0xB3 or header == 0xB8:  # sequence header / GOP header
                return True, True
            if header == 0x00:  # picture start
                return False, saw_parameter_set
        at = es.find(_START_CODE, at + 3)
    return None, saw_parameter_set


def _with_cc(packets: tuple[bytes, ...], last_cc: int) -> bytes:
    out = bytearray(b"".join(packets))
    count = len(packets)
    for k in range(count):
        at = k * TS_PACKET_SIZE + 3
        out[at] = (out[at] & 0xF0) | ((last_cc - (count - 1 - k)) & 0x0F)
    return bytes(out)
