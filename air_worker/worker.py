"""AirWorker: runs one channel's ffmpeg into a socketpair and hands the read end to the front.

The worker keeps the write end for as long as that ffmpeg's stream lasts, so the front
sees EOF exactly when the stream is over, never while ffmpeg is merely between writes.
When ffmpeg dies under its viewers, the worker starts a new one on a new socketpair and
hands that over first, then closes the old write end: the front finishes the old stream
and continues with the new one in the same buffer, and its viewers stay connected.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import selectors
import signal
import socket
import subprocess
import time

from retrovue_air import child_process, wire
from retrovue_air.media_info import keyframe_at_or_before
from retrovue_air.config import Channel, Config, MediaFiles, Relay
from retrovue_air.ffmpeg.binary import ffmpeg_binary
from retrovue_air.ffmpeg.exits import exit_reason
from retrovue_air.ffmpeg.profile import AUDIO_RATE
from retrovue_air.house_format import house_format
from retrovue_air.schedule import Airing
from retrovue_air.url_secrets import redact_urls, redacted

from .cached_playout import cached_airing_list, cached_window, from_now
from .ffmpeg_command import build_command, cold_burst_seconds, concat_list, encoder_command, font_file, remux_list
from .playout import Playout, raw_pipe
from .remux_slate import SlateClip, StreamFormat, make_slate_clip, stream_format
from .slots import FileChecks, Piece, pieces

log = logging.getLogger("air_worker")

STOP_GRACE_SECONDS = 0.5
STDERR_TAIL_LINES = 20
MAX_BACKOFF_SECONDS = 5.0
# A first ffmpeg that exits with an error sooner than this could not start (a broken
# file, a bad option): restarting it would only delay the viewers' 503. One killed by
# a signal crashed, and is restarted.
START_FAILURE_SECONDS = 1.0
# A relay's pull (or ffmpeg) that ran this long was streaming: its exit starts a new
# origin outage. One that could not reach the origin exits at once.
RELAY_UP_SECONDS = 10.0
# A relay's first pull that fails this soon found its origin down: the first viewers hear
# "Connection refused" (or the origin's 503) at once rather than a start timeout. (ffmpeg,
# with remux = true, tries a few times first, hence the margin.)
RELAY_START_FAILURE_SECONDS = 4.0
# A scheduled channel with transcode = false is remuxed from a concat playlist of this
# many hours of airings; when it runs out, the next one starts at once.
COPY_PLAYLIST_HOURS = 6
# A remuxed channel's slates with a programme's title on them, made when its stream starts
# (0.2 to 0.6 s each).
MAX_TITLED_SLATES = 3


class AirWorker:
    def __init__(self, channel: Channel, config: Config, stream: int, link: socket.socket):
        self.channel = channel
        self.config = config
        self.stream = stream
        self.link = link  # private to this worker and the front: made by the supervisor before the fork
        self.ffmpeg: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ffmpegs_started = 0
        self.write_end: socket.socket | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self.restart_at: float | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_partial = b""
        self.outage_since: float | None = None  # a relay: when its origin went away
        self.outage_retries = 0
        self.playout: Playout | None = None  # scheduled media: the decoders feeding the encoder
        self.from_cache = False  # scheduled media remuxed from the ingest cache

    def run(self) -> int:
        """Stream until told to stop; returns the process exit code."""
        wake_r, wake_w = socket.socketpair()
        self.link.setblocking(False)
        self.sel = selectors.DefaultSelector()
        try:
            wake_w.setblocking(False)
            signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, lambda *_: None)
            if not self.start_stream():
                return 1
            return self.serve(wake_r)
        finally:
            self.stop_ffmpeg()
            signal.set_wakeup_fd(-1)
            self.sel.close()
            for sock in (self.write_end, wake_r, wake_w, self.link):
                if sock is not None:
                    sock.close()

    def start_stream(self) -> bool:
        """Start ffmpeg on a new socketpair and hand its read end to the front."""
        read_end, write_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.start_ffmpeg(write_end)
            try:
                wire.send(self.link, wire.StreamReady(self.channel.id, self.stream, self.ffmpeg.pid),
                          fd=read_end.fileno())
            except OSError as e:
                log.error("channel %s: cannot hand the stream to the front: %s", self.channel.id, e)
                write_end.close()
                return False
        finally:
            read_end.close()
        # Only now the old write end goes: the front has the new stream queued before
        # it can see the old one end.
        if self.write_end is not None:
            self.write_end.close()
        self.write_end = write_end
        return True

    def start_ffmpeg(self, stdout: socket.socket) -> None:
        if self.playout is not None:
            self.playout.stop()
            self.playout = None
        source = self.channel.source
        if isinstance(source, MediaFiles) and source.schedule is not None:
            return self.start_scheduled_ffmpeg(stdout, source)
        # What the command reads from a file, in memory, not a temp file: a killed worker leaves
        # nothing on disk. A playlist; or a relay's URL, kept off the command line.
        memfd = None
        if isinstance(source, MediaFiles) and len(source.paths) > 1:
            memfd = os.memfd_create("playlist.ffconcat", 0)
            os.write(memfd, concat_list(source.paths).encode())
        elif isinstance(source, Relay) and not source.remux:
            memfd = os.memfd_create("relay-url", 0)
            os.write(memfd, source.url.encode())
        try:
            binary = ffmpeg_binary(cold_burst=cold_burst_seconds(self.channel) > 0)
            path = None if memfd is None else f"/dev/fd/{memfd}"
            if isinstance(source, Relay):
                cmd = build_command(self.channel, binary, url_file=path)
            else:
                cmd = build_command(self.channel, binary, path, font_file())
            self.popen_ffmpeg(cmd, stdout, () if memfd is None else (memfd,))
        finally:
            if memfd is not None:
                os.close(memfd)

    def start_scheduled_ffmpeg(self, stdout: socket.socket, source: MediaFiles) -> None:
        """What the schedule puts on air now: decoders into raw pipes and one encoder, or a remux."""
        now = time.time()
        self.from_cache = False
        if self.channel.ingest:
            airings = from_now(source.schedule.airings(now, now + COPY_PLAYLIST_HOURS * 3600), now)
            entries = cached_window(self.channel, self.config, airings)
            if entries is not None:
                return self.start_cached_ffmpeg(stdout, airings, entries)
        if self.channel.transcode:
            video_r, video_w = raw_pipe()
            audio_r, audio_w = raw_pipe()
            pass_fds = (video_r, audio_r)
            cmd = encoder_command(self.channel, ffmpeg_binary(cold_burst=cold_burst_seconds(self.channel) > 0),
                                  video_r, audio_r)
        else:
            airings = source.schedule.airings(now, now + COPY_PLAYLIST_HOURS * 3600)
            on = airings[0]  # the one on air now, from now: from the keyframe at or before now
            offset = dict(source.start_times).get(on.programme.path, 0.0)
            target = on.inpoint + now - on.start
            if on.programme.repeats > 1:
                # A file shorter than its slot, playing again and again: from the start of this
                # pass, less than MIN_SLOT_SECONDS early (its first frame may be its only keyframe).
                early = target % on.programme.duration
            else:
                keyframe = keyframe_at_or_before(on.programme.path, offset + target)
                early = target - (keyframe - offset) if keyframe is not None else 0.0
            if not 0.0 <= early <= 10.0:
                early = 0.0
            airings[0] = dataclasses.replace(on, start=now - early, inpoint=target - early)
            parts = self.remux_pieces(airings)
            slates = self.remux_slates(parts)
            playlist = os.memfd_create("playlist.ffconcat", 0)
            os.write(playlist, remux_list(parts, dict(source.start_times), slates).encode())
            pass_fds = (playlist, *(clip.fd for clip in slates.values()))
            cmd = build_command(self.channel, ffmpeg_binary(cold_burst=cold_burst_seconds(self.channel) > 0),
                                f"/dev/fd/{playlist}")
        try:
            self.popen_ffmpeg(cmd, stdout, pass_fds)
        finally:
            # The encoder's now (our read ends would keep its input from ending), or the remux's.
            for fd in pass_fds:
                os.close(fd)
        if self.channel.transcode:
            self.playout = Playout(self.channel, ffmpeg_binary(), video_w, audio_w, now)
            self.playout.next()

    def remux_pieces(self, airings: list[Airing]) -> list[Piece]:
        """The window's airings as their files can play them now, each gap a slate (logged once per cause)."""
        files = FileChecks()
        parts = [p for a in airings for p in pieces(a, airings[0].start, files.playable(a.programme))]
        gaps = collections.Counter((p.airing.programme.title, p.slate) for p in parts if p.slate is not None)
        for (title, why), count in gaps.items():
            log.warning("channel %s: a slate covers %d airings of %s in the next %d h: %s", self.channel.id,
                        count, title, COPY_PLAYLIST_HOURS, why)
        return parts

    def remux_slates(self, parts: list[Piece]) -> dict[str, SlateClip]:
        """A slate clip for each title a gap stands in for, in the format of the files that do play."""
        titles = dict.fromkeys(p.airing.programme.title for p in parts if p.slate is not None)
        if not titles:
            return {}
        playing = next((p.airing.programme.path for p in parts if p.slate is None), None)
        # With no file to match (none of the window can play), the slate is all there is: any
        # format will do, and the channel's own is the one its viewers would expect.
        fmt = stream_format(playing) if playing else StreamFormat(
            ("h264", self.channel.width, self.channel.height, str(self.channel.fps), "yuv420p"), ("aac", AUDIO_RATE, 2))
        if fmt is None:
            return {}
        # Each clip is made before the stream's first byte: the first few titles get their own,
        # the rest share one that names none.
        wanted = [*list(titles)[:MAX_TITLED_SLATES], *([""] if len(titles) > MAX_TITLED_SLATES else [])]
        slates = {}
        for title in wanted:
            clip = make_slate_clip(self.channel, ffmpeg_binary(), title, fmt, font_file())
            if clip is None:
                break
            slates[title] = clip
        return slates

    def start_cached_ffmpeg(self, stdout: socket.socket, airings, entries) -> None:
        """Every airing of the window is ingested: remux them, no decoder and no encoder."""
        playlist = os.memfd_create("playlist.ffconcat", 0)
        try:
            os.write(playlist, cached_airing_list(airings, entries, house_format(self.channel)).encode())
            remux = dataclasses.replace(self.channel, transcode=False)
            cmd = build_command(remux, ffmpeg_binary(cold_burst=cold_burst_seconds(self.channel) > 0),
                                f"/dev/fd/{playlist}")
            self.popen_ffmpeg(cmd, stdout, (playlist,))
        finally:
            os.close(playlist)
        self.from_cache = True
        log.info("channel %s: playing %d airings from the ingest cache", self.channel.id, len(airings))

    def popen_ffmpeg(self, cmd: list[str], stdout: socket.socket, pass_fds: tuple[int, ...] = ()) -> None:
        self.stderr_tail.clear()
        self.ffmpeg = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=stdout.fileno(), stderr=subprocess.PIPE, pass_fds=pass_fds,
            # Its own process group: a terminal's Ctrl-C goes to the supervisor, which
            # decides; ffmpeg must not quit on its own and look like a crash.
            process_group=0, preexec_fn=child_process.exec_guard(os.getpid()))
        self.started_at = time.monotonic()
        self.ffmpegs_started += 1
        os.set_blocking(self.ffmpeg.stderr.fileno(), False)
        self.sel.register(self.ffmpeg.stderr, selectors.EVENT_READ, "stderr")
        log.info("channel %s: stream %d started ffmpeg pid %d: %s",
                 self.channel.id, self.stream, self.ffmpeg.pid, redact_urls(" ".join(cmd)))

    def serve(self, wake: socket.socket) -> int:
        self.sel.register(wake, selectors.EVENT_READ, "signal")
        self.sel.register(self.link, selectors.EVENT_READ, "link")
        while True:
            timeout = None if self.restart_at is None else max(0.0, self.restart_at - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.data == "stderr":
                    if not self.read_stderr():
                        self.sel.unregister(self.ffmpeg.stderr)
                elif key.data == "link":
                    if self.stop_requested():
                        return 0
                else:
                    signals = wake.recv(64)
                    if signal.SIGTERM in signals:
                        log.info("channel %s: terminated by the supervisor", self.channel.id)
                        return 0
            if self.playout is not None and self.ffmpeg.poll() is None and not self.playout.poll():
                reason, *tail = self.playout.last_error
                log.error("channel %s: %s; no airing could be decoded, giving up", self.channel.id, reason)
                try:
                    wire.send(self.link, wire.StreamFailed(self.channel.id, self.stream, reason[:500],
                                                           "\n".join(tail)[-2000:]))
                except OSError as e:
                    log.warning("channel %s: cannot tell the front: %s", self.channel.id, e)
                return 1
            if self.restart_at is not None:
                if time.monotonic() >= self.restart_at:
                    self.restart_at = None
                    self.restarts.append(time.monotonic())
                    if not self.start_stream():
                        return 1
            elif self.ffmpeg.poll() is not None:
                code = self.ffmpeg_exited()
                if code is not None:
                    return code

    def stop_requested(self) -> bool:
        """True on STOP, or when the front closed its end of the link (it is gone, or done with us)."""
        for message, fds in wire.receive_some(self.link):
            for fd in fds:
                os.close(fd)
            if message is None or (isinstance(message, wire.Stop) and message.stream == self.stream):
                return True
            log.warning("channel %s: ignored a message: %s", self.channel.id, message)
        return False

    def ffmpeg_exited(self) -> int | None:
        """ffmpeg died on its own: schedule a restart (None), or give up (the exit code)."""
        # The front sends STOP before it closes its end, so an ffmpeg killed by the
        # broken pipe has a STOP waiting here: that is a stop, not a failure.
        if self.stop_requested():
            return 0
        if self.playout is not None:  # its decoder lost its reader: no use until the next encoder
            self.playout.stop()
            self.playout = None
        while self.read_stderr():
            pass
        try:
            self.sel.unregister(self.ffmpeg.stderr)
        except KeyError:  # already at EOF
            pass
        self.ffmpeg.stderr.close()
        code = self.ffmpeg.returncode
        if code == 0 and self.ran_out_of_playlist():
            log.info("channel %s: the %d h playlist ran out; starting the next", self.channel.id,
                     COPY_PLAYLIST_HOURS)
            return None if self.start_stream() else 1
        pulls = isinstance(self.channel.source, Relay) and not self.channel.source.remux
        reason = exit_reason("the relay pull" if pulls else "ffmpeg", code, list(self.stderr_tail))
        tail = "\n".join(self.stderr_tail)
        now = time.monotonic()
        while self.restarts and self.restarts[0] < now - self.config.restart_window_seconds:
            self.restarts.popleft()
        relay = isinstance(self.channel.source, Relay)
        first_start_failed = (self.ffmpegs_started == 1 and code > 0 and now - self.started_at
                              < (RELAY_START_FAILURE_SECONDS if relay else START_FAILURE_SECONDS))
        if relay:
            over_limit = self.relay_gives_up(now)
            why = f" (its origin away for {now - self.outage_since:.0f} s)"
        else:
            over_limit = len(self.restarts) >= self.config.restart_limit
            why = f" ({len(self.restarts)} restarts in {self.config.restart_window_seconds:g} s)"
        if first_start_failed or over_limit:
            why = "" if first_start_failed else why
            log.error("channel %s: %s%s; giving up. ffmpeg's last words:\n  %s", self.channel.id, reason,
                      why, "\n  ".join(self.stderr_tail) or "(nothing)")
            try:
                wire.send(self.link, wire.StreamFailed(self.channel.id, self.stream, (reason + why)[:500],
                                                       tail[-2000:]))
            except OSError as e:
                log.warning("channel %s: cannot tell the front: %s", self.channel.id, e)
            return 1
        if relay:
            delay = min(MAX_BACKOFF_SECONDS, self.config.restart_backoff_seconds * 2 ** self.outage_retries)
            log.warning("channel %s: %s; reconnecting to %s in %.1f s (its origin away for %.0f s, "
                        "giving up after %g s); its last words:\n  %s", self.channel.id, reason,
                        redacted(self.channel.source.url), delay, now - self.outage_since,
                        self.config.restart_window_seconds, "\n  ".join(self.stderr_tail) or "(nothing)")
            self.outage_retries += 1
            self.restart_at = now + delay
            return None
        delay = min(MAX_BACKOFF_SECONDS, self.config.restart_backoff_seconds * 2 ** len(self.restarts))
        log.warning("channel %s: %s; restarting it in %.1f s (restart %d of at most %d in %g s); "
                    "ffmpeg's last words:\n  %s", self.channel.id, reason, delay, len(self.restarts) + 1,
                    self.config.restart_limit, self.config.restart_window_seconds,
                    "\n  ".join(self.stderr_tail) or "(nothing)")
        self.restart_at = now + delay
        return None

    def relay_gives_up(self, now: float) -> bool:
        """A relay's origin restarting or cut off is waited out, its viewers kept connected.

        Not restart_limit: an origin that takes a minute to come back would use it up in
        seconds. The relay keeps reconnecting (backoff doubling to at most 5 s) until
        its origin has been away for restart_window_seconds; then it fails as any channel
        does, and a viewer after failed_retry_seconds tries again.
        """
        if self.outage_since is None or now - self.started_at >= RELAY_UP_SECONDS:
            self.outage_since = now  # that ffmpeg was streaming: a new outage begins
            self.outage_retries = 0
        return now - self.outage_since > self.config.restart_window_seconds

    def ran_out_of_playlist(self) -> bool:
        source = self.channel.source
        return (isinstance(source, MediaFiles) and source.schedule is not None
                and (not self.channel.transcode or self.from_cache)
                and time.monotonic() - self.started_at > COPY_PLAYLIST_HOURS * 3600 - 60)

    def read_stderr(self) -> bool:
        """Keep the tail of ffmpeg's stderr; False at EOF."""
        try:
            data = os.read(self.ffmpeg.stderr.fileno(), 65536)
        except BlockingIOError:
            return True
        except (OSError, ValueError):
            return False
        if not data:
            if self._stderr_partial:
                self.stderr_tail.append(redact_urls(self._stderr_partial.decode(errors="replace")))
                self._stderr_partial = b""
            return False
        *lines, self._stderr_partial = (self._stderr_partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                # The tail goes to our log, /channels and 503s: ffmpeg quotes its input URL.
                self.stderr_tail.append(redact_urls(line.decode(errors="replace").rstrip()))
        return True

    def stop_ffmpeg(self) -> None:
        if self.playout is not None:
            # The encoder is told first, then its decoder killed and our write ends
            # closed: an encoder blocked reading its input would not act on SIGTERM until
            # its input ends. Each is waited for as it dies, so none lingers unreaped.
            if self.ffmpeg is not None and self.ffmpeg.poll() is None:
                self.ffmpeg.terminate()
            self.playout.stop()
            self.playout = None
        self.stop_encoder()

    def stop_encoder(self) -> None:
        proc = self.ffmpeg
        if proc is None:
            return
        if proc.poll() is None:
            began = time.monotonic()
            proc.terminate()  # again, for a scheduled channel: harmless
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("channel %s: ffmpeg %d ignored SIGTERM, killing it", self.channel.id, proc.pid)
                proc.kill()
                proc.wait()
            log.info("channel %s: stream %d stopped ffmpeg pid %d (status %s) in %.3f s",
                     self.channel.id, self.stream, proc.pid, proc.returncode, time.monotonic() - began)
        if not proc.stderr.closed:
            proc.stderr.close()


def run_air_worker(channel: Channel, config: Config, stream: int, link: socket.socket,
                   parent_pid: int) -> int:
    child_process.become(f"air_worker {channel.id}", f"air_worker[{channel.id}]", parent_pid)
    # A worker runs ffmpeg from config and nothing else: it can never gain privileges.
    import prctl

    prctl.set_no_new_privs(True)
    return AirWorker(channel, config, stream, link).run()
