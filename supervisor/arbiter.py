"""Supervisor: forks the HTTP front and the Air workers, reaps them, shuts down cleanly.

Modelled on gunicorn's arbiter: signal handlers do nothing but wake the loop (through
signal.set_wakeup_fd); the loop turns each signal into a call to the method named for
it, outside signal context. One reap() drains every exit and decides what it means.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import selectors
import signal
import socket
import time
from dataclasses import dataclass, replace

import prctl

from air_worker.worker import run_air_worker
from http_front.front import run_front
from retrovue_air import child_process, config as configuration, wire
from retrovue_air.config import Config

from .sd_notify import Notifier

log = logging.getLogger("supervisor")

SHUTDOWN_GRACE_SECONDS = 4.0
FRONT_RESTART_DELAY = 0.2
LISTEN_BACKLOG = 4096


@dataclass
class AirWorkerRecord:
    channel: str
    stream: int


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def drop_privileges(user: str) -> None:
    """Become `user` for good: the port is bound, and nothing after this needs root."""
    import pwd

    if os.geteuid() != 0:
        log.warning("not root: cannot switch to user %r; running as uid %d", user, os.geteuid())
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.info("running as user %s (uid %d)", user, entry.pw_uid)


class Supervisor:
    SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, config: Config, listener: socket.socket):
        self.config = config
        self.listener = listener
        self.instance = secrets.token_hex(6)
        self.pid = os.getpid()
        self.front_pid: int | None = None
        self.control: socket.socket | None = None
        self.workers: dict[int, AirWorkerRecord] = {}
        self.stopping = False
        self.front_restart_at: float | None = None
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        # Bound once, here, and kept: workers can always reach the front's inbox,
        # including across a restart of the front.
        self.front_inbox = wire.bind_inbox(wire.front_inbox_address(self.instance))
        self.notifier = Notifier.from_environ(os.environ)
        self.ready_sent = False
        self.last_pong: float | None = None
        self.next_ping: float | None = None

    # The loop

    def run(self) -> int:
        if self.config.user:
            drop_privileges(self.config.user)
        prctl.set_child_subreaper(1)
        prctl.set_proctitle("retrovue-air: supervisor")
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            signal.signal(signum, lambda *_: None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.spawn_front()
        try:
            while not (self.stopping and not self.children()):
                self.watchdog()
                timeout = self.timeout()
                for key, _ in self.sel.select(timeout):
                    if key.data == "signal":
                        for signum in self.wake_r.recv(256):
                            self.handle_signal(signum)
                    elif key.data == "control":
                        self.read_control()
                self.reap()
                self.check_deadlines()
        finally:
            self.close()
        log.info("stopped")
        return 0

    def children(self) -> list[int]:
        return ([self.front_pid] if self.front_pid else []) + list(self.workers)

    def timeout(self) -> float | None:
        deadlines = [self.next_ping, self.front_restart_at,
                     self.shutdown_deadline if self.stopping else None]
        due = [d for d in deadlines if d is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def watchdog(self) -> None:
        """Ping systemd's watchdog only while this loop turns and the front answers it."""
        interval = self.notifier.watchdog_interval
        if interval is None or self.stopping:
            self.next_ping = None
            return
        now = time.monotonic()
        if self.next_ping is not None and now < self.next_ping:
            return
        if self.last_pong is not None and now - self.last_pong < 2 * interval:
            self.notifier.watchdog()
        elif self.ready_sent:
            log.warning("http_front has not answered for %.1f s: not pinging the watchdog",
                        now - (self.last_pong or now))
        self.tell_front(wire.Ping())
        self.next_ping = now + interval

    def check_deadlines(self) -> None:
        now = time.monotonic()
        if self.stopping and now >= self.shutdown_deadline and self.children():
            self.murder(self.children())
            self.shutdown_deadline = now + SHUTDOWN_GRACE_SECONDS
        if self.front_restart_at is not None and now >= self.front_restart_at and not self.stopping:
            self.front_restart_at = None
            self.spawn_front()

    def handle_signal(self, signum: int) -> None:
        name = {signal.SIGCHLD: "chld", signal.SIGTERM: "term", signal.SIGINT: "int",
                signal.SIGHUP: "hup"}.get(signum)
        if name:
            getattr(self, f"handle_{name}")()

    def handle_chld(self) -> None:
        self.reap()

    def handle_term(self) -> None:
        self.stop("SIGTERM")

    def handle_int(self) -> None:
        self.stop("SIGINT")

    def handle_hup(self) -> None:
        """Reload the configuration: the front applies it; a broken file changes nothing."""
        path = self.config.path
        self.notifier.reloading()
        try:
            if path == configuration.BUILT_IN:
                text = configuration.default_config_text()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            new = configuration.parse(text, path)
        except (OSError, UnicodeDecodeError, configuration.ConfigError) as e:
            log.error("SIGHUP: configuration refused, keeping the running one: %s", e)
            self.notifier.ready()
            return
        if new.listen != self.config.listen:
            log.warning("SIGHUP: the listen address changes only on a restart")
        new = replace(new, listen=self.config.listen, user=self.config.user)
        self.config = new
        self.tell_front(wire.Reload(path, text))
        log.info("SIGHUP: configuration reloaded from %s: %d channels", path, len(new.channels))
        self.notifier.ready(self.status_text())

    def status_text(self, viewers: int | None = None, live: int | None = None) -> str:
        text = f"{len(self.config.channels)} channels"
        if viewers is not None:
            text += f", {live} live, {viewers} viewers"
        return text

    def stop(self, why: str) -> None:
        if self.stopping:
            return
        self.notifier.stopping()
        log.info("%s: stopping %d processes", why, len(self.children()))
        self.stopping = True
        self.shutdown_deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        self.kill(self.children(), signal.SIGTERM)

    # Children: spawn, reap, kill

    def fork(self) -> int:
        """fork(); in the child, drop the supervisor's own loop: its signals, selector, wakeup pair.

        The caller's child branch closes what else it does not need (the listener, the
        control socket, the inboxes), since that differs by role."""
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            for signum in self.SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            self.sel.close()
            self.wake_r.close()
            self.wake_w.close()
            self.notifier.close()
        return pid

    def spawn_front(self) -> None:
        sup_end, front_end = wire.control_pair()
        pid = self.fork()
        if pid == 0:
            code = 1
            try:
                sup_end.close()
                if self.control is not None:
                    self.control.close()
                child_process.become("http_front", "http_front", self.pid)
                code = run_front(self.config, self.listener, front_end, self.front_inbox, self.instance)
            except BaseException:
                log.exception("the front failed")
            finally:
                child_process.finish(code)
        front_end.close()
        if self.control is not None:
            self.sel.unregister(self.control)
            self.control.close()
        self.control = sup_end
        self.control.setblocking(False)
        self.sel.register(self.control, selectors.EVENT_READ, "control")
        self.front_pid = pid
        log.info("started http_front pid %d", pid)

    def spawn_air_worker(self, channel_id: str, stream: int) -> None:
        channel = self.config.channel(channel_id)
        if channel is None:
            log.error("the front asked for unknown channel %r", channel_id)
            return
        # The worker's inbox is bound before the fork, so a STOP can never be sent
        # to an address that does not exist yet.
        inbox = wire.bind_inbox(wire.air_inbox_address(self.instance, stream))
        pid = self.fork()
        if pid == 0:
            code = 1
            try:
                self.control.close()
                self.listener.close()
                front_address = wire.front_inbox_address(self.instance)
                self.front_inbox.close()
                code = run_air_worker(channel, self.config, stream, inbox, front_address, self.pid)
            except BaseException:
                log.exception("the air worker failed")
            finally:
                child_process.finish(code)
        inbox.close()
        self.workers[pid] = AirWorkerRecord(channel_id, stream)
        log.info("channel %s: started air_worker pid %d for stream %d", channel_id, pid, stream)
        self.tell_front(wire.WorkerSpawned(channel_id, stream, pid))

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            how = describe_status(status)
            if pid == self.front_pid:
                self.front_exited(how)
            elif pid in self.workers:
                record = self.workers.pop(pid)
                level = logging.INFO if status == 0 or self.stopping else logging.WARNING
                log.log(level, "channel %s: air_worker pid %d %s", record.channel, pid, how)
                self.tell_front(wire.WorkerExited(record.channel, record.stream, pid, how))
            else:
                # We are a subreaper: an orphaned grandchild (an ffmpeg whose worker died) lands here.
                log.info("reaped orphan pid %d (%s)", pid, how)

    def front_exited(self, how: str) -> None:
        self.front_pid = None
        if self.stopping:
            log.info("http_front %s", how)
            return
        log.error("http_front %s; stopping all streams and restarting it", how)
        self.kill(list(self.workers), signal.SIGTERM)
        self.front_restart_at = time.monotonic() + FRONT_RESTART_DELAY

    def kill(self, pids: list[int], signum: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def murder(self, pids: list[int]) -> None:
        log.warning("%d processes did not stop in time: killing them", len(pids))
        self.kill(pids, signal.SIGKILL)

    # The front

    def read_control(self) -> None:
        while True:
            try:
                data = self.control.recv(wire.MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                return  # the front is gone: reap() hears of it
            try:
                message = wire.decode(data)
            except wire.ProtocolError as e:
                log.error("bad message from the front: %s", e)
                continue
            if isinstance(message, wire.StartStream) and not self.stopping:
                self.spawn_air_worker(message.channel, message.stream)
            elif isinstance(message, wire.FrontReady):
                self.last_pong = time.monotonic()
                if not self.ready_sent:
                    self.ready_sent = True
                    host, port = self.listener.getsockname()[:2]
                    self.notifier.ready(f"serving {self.status_text()} on {host}:{port}")
            elif isinstance(message, wire.Pong):
                self.last_pong = time.monotonic()
                self.notifier.status(f"serving {self.status_text(message.viewers, message.live_channels)}")

    def tell_front(self, message: wire.Message) -> None:
        if self.control is None or self.front_pid is None:
            return
        try:
            wire.send(self.control, message)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.error("cannot tell the front: %s", e)

    def close(self) -> None:
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        self.sel.close()
        for sock in (self.control, self.front_inbox, self.wake_r, self.wake_w, self.listener):
            if sock is not None:
                sock.close()
