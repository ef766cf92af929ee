"""AirWorker: runs one channel's ffmpeg into a socketpair and hands the read end to the front.

The worker keeps the write end for as long as it lives, so the front sees EOF on the
stream exactly when the worker is gone, never while a stream is merely between writes.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile

from retrovue_air import child_process, wire
from retrovue_air.config import Channel, MediaFiles

from .ffmpeg_command import build_command, concat_list, ffmpeg_binary, font_file

log = logging.getLogger("air_worker")

STOP_GRACE_SECONDS = 0.5
STDERR_TAIL_LINES = 20


class AirWorker:
    def __init__(self, channel: Channel, stream: int, inbox: socket.socket, front_address: bytes):
        self.channel = channel
        self.stream = stream
        self.inbox = inbox
        self.front_address = front_address
        self.ffmpeg: subprocess.Popen | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_partial = b""

    def run(self) -> int:
        """Stream until told to stop; returns the process exit code."""
        wake_r, wake_w = socket.socketpair()
        read_end, write_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        workdir = tempfile.mkdtemp(prefix="retrovue-air-")
        try:
            wake_w.setblocking(False)
            signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            for signum in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(signum, lambda *_: None)
            self.start_ffmpeg(write_end, workdir)
            try:
                wire.send(self.inbox, wire.StreamReady(self.channel.id, self.stream, self.ffmpeg.pid),
                          self.front_address, fd=read_end.fileno())
            except OSError as e:
                log.error("channel %s: cannot hand the stream to the front: %s", self.channel.id, e)
                return 1
            read_end.close()
            return self.serve(wake_r)
        finally:
            self.stop_ffmpeg()
            signal.set_wakeup_fd(-1)
            for sock in (read_end, write_end, wake_r, wake_w):
                sock.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def start_ffmpeg(self, stdout: socket.socket, workdir: str) -> None:
        playlist = None
        source = self.channel.source
        if isinstance(source, MediaFiles) and len(source.paths) > 1:
            playlist = os.path.join(workdir, "playlist.ffconcat")
            with open(playlist, "w") as f:
                f.write(concat_list(source.paths))
        cmd = build_command(self.channel, ffmpeg_binary(), playlist, font_file())
        self.ffmpeg = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=stdout.fileno(), stderr=subprocess.PIPE,
            # Its own process group: a terminal's Ctrl-C goes to the supervisor, which
            # decides; ffmpeg must not quit on its own and look like a crash.
            process_group=0, preexec_fn=child_process.exec_guard(os.getpid()))
        os.set_blocking(self.ffmpeg.stderr.fileno(), False)
        log.info("channel %s: stream %d started ffmpeg pid %d: %s",
                 self.channel.id, self.stream, self.ffmpeg.pid, " ".join(cmd))

    def serve(self, wake: socket.socket) -> int:
        with selectors.DefaultSelector() as sel:
            sel.register(wake, selectors.EVENT_READ, "signal")
            sel.register(self.inbox, selectors.EVENT_READ, "inbox")
            sel.register(self.ffmpeg.stderr, selectors.EVENT_READ, "stderr")
            while True:
                for key, _ in sel.select():
                    if key.data == "stderr":
                        if not self.read_stderr():
                            sel.unregister(self.ffmpeg.stderr)
                    elif key.data == "inbox":
                        if self.stop_requested():
                            return 0
                    else:
                        signals = wake.recv(64)
                        if signal.SIGTERM in signals:
                            log.info("channel %s: terminated by the supervisor", self.channel.id)
                            return 0
                if self.ffmpeg.poll() is not None:
                    return self.ffmpeg_exited()

    def stop_requested(self) -> bool:
        while True:
            try:
                message, fds = wire.receive(self.inbox)
            except BlockingIOError:
                return False
            except wire.ProtocolError as e:
                log.warning("channel %s: ignored a message: %s", self.channel.id, e)
                continue
            for fd in fds:
                os.close(fd)
            if isinstance(message, wire.Stop) and message.stream == self.stream:
                return True

    def ffmpeg_exited(self) -> int:
        # The front sends STOP before it closes its end, so an ffmpeg killed by the
        # broken pipe has a STOP waiting here: that is a stop, not a failure.
        if self.stop_requested():
            return 0
        while self.read_stderr():
            pass
        code = self.ffmpeg.returncode
        status = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        last = self.stderr_tail[-1] if self.stderr_tail else "no error output"
        reason = f"ffmpeg {status}: {last}"
        log.error("channel %s: %s; ffmpeg's last words:\n  %s", self.channel.id, reason,
                  "\n  ".join(self.stderr_tail) or "(nothing)")
        try:
            wire.send(self.inbox, wire.StreamFailed(self.channel.id, self.stream, reason[:1000]),
                      self.front_address)
        except OSError as e:
            log.warning("channel %s: cannot tell the front: %s", self.channel.id, e)
        return 1

    def read_stderr(self) -> bool:
        """Keep the tail of ffmpeg's stderr; False at EOF."""
        try:
            data = os.read(self.ffmpeg.stderr.fileno(), 65536)
        except BlockingIOError:
            return True
        if not data:
            if self._stderr_partial:
                self.stderr_tail.append(self._stderr_partial.decode(errors="replace"))
                self._stderr_partial = b""
            return False
        *lines, self._stderr_partial = (self._stderr_partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.stderr_tail.append(line.decode(errors="replace").rstrip())
        return True

    def stop_ffmpeg(self) -> None:
        proc = self.ffmpeg
        if proc is None or proc.poll() is not None:
            if proc is not None:
                proc.stderr.close()
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("channel %s: ffmpeg %d ignored SIGTERM, killing it", self.channel.id, proc.pid)
            proc.kill()
            proc.wait()
        proc.stderr.close()
        log.info("channel %s: stream %d stopped ffmpeg pid %d (status %s)",
                 self.channel.id, self.stream, proc.pid, proc.returncode)


def run_air_worker(channel: Channel, stream: int, inbox: socket.socket, front_address: bytes,
                   parent_pid: int) -> int:
    child_process.become(f"air_worker {channel.id}", f"air_worker[{channel.id}]", parent_pid)
    return AirWorker(channel, stream, inbox, front_address).run()
