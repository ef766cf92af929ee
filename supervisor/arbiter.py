"""Supervisor: forks the HTTP front and the Air workers, reaps them, shuts down cleanly.

Modelled on gunicorn's arbiter: signal handlers do nothing but wake the loop (through
signal.set_wakeup_fd); the loop turns each signal into a call to the method named for
it, outside signal context. One reap() drains every exit and decides what it means.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, replace

import prctl

from air_worker.worker import run_air_worker
from http_front.front import run_front
from ingest.ingester import run_ingester
from retrovue_air import child_process, config as configuration, wire
from retrovue_air.config import Config, MediaFiles
from retrovue_air.ffmpeg.binary import ffmpeg_binary, ffmpeg_version
from retrovue_air.ffmpeg.exits import wait_status_wording
from retrovue_air.ingest_progress import SOME_FILES_FAILED, ingester_finished

from .backoff import Backoff
from .sd_notify import Notifier

log = logging.getLogger("supervisor")

SHUTDOWN_GRACE_SECONDS = 4.0
FRONT_RESTART_DELAY = 0.2
LISTEN_BACKLOG = 4096
# A worker told to stop (SIGTERM) that has not exited after this is killed: one stopped
# by a debugger or stuck in the kernel would otherwise hold its channel forever.
STOP_GRACE_SECONDS = 3.0
# An ingester that died is started again after 0.5 s, 1 s, 2 s... at most a minute: each start
# transcodes its current file from the beginning, which a crash loop must not do flat out.
INGESTER_BACKOFF = dict(first=0.5, most=60.0, reset_after=60.0)


@dataclass
class AirWorkerRecord:
    channel: str
    stream: int
    generation: int  # the front it was started for: only that front hears of its exit
    stop_deadline: float | None = None  # told to stop; killed if still here then


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


def check_media_readable(config: Config) -> None:
    """Say at start which media files the user we run as cannot read (as that user, after the drop)."""
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    for channel in config.channels:
        if isinstance(channel.source, MediaFiles):
            for path in channel.source.paths:
                if not os.access(path, os.R_OK):
                    log.error("channel %s: %s is not readable by user %s", channel.id, path, user)


def send_loaded_config(path: str, sock: socket.socket) -> None:
    """A config loader's whole work: load path (probing its media) and send the Config, or why not."""
    try:
        new = configuration.load_default() if path == configuration.BUILT_IN else configuration.load(path)
    except configuration.ConfigError as e:
        wire.send(sock, wire.ReloadRefused.cut(str(e)))
        return
    except Exception as e:  # noqa: BLE001 -- whatever it is, it is a refusal the supervisor logs
        log.exception("cannot load %s", path)
        wire.send(sock, wire.ReloadRefused.cut(f"cannot load {path}: {type(e).__name__}: {e}"))
        return
    wire.send_config(sock, wire.Reload(path), new)


class Supervisor:
    SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, config: Config, listener: socket.socket):
        self.config = config
        self.listener = listener
        self.pid = os.getpid()
        self.front_pid: int | None = None
        # Each front gets the next generation; its stream ids are its own (see Front).
        self.generation = 0
        self.control: socket.socket | None = None
        self.workers: dict[int, AirWorkerRecord] = {}
        self.stopping = False
        self.front_restart_at: float | None = None
        self.started = time.monotonic()
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.notifier = Notifier.from_environ(os.environ)
        self.ready_sent = False
        self.last_pong: float | None = None
        self.next_ping: float | None = None
        self.ingester_pid: int | None = None
        self.ingest_again = False  # the config changed while it ran: start a new one when it exits
        # SIGHUP: a child loads the new configuration (probing media can take minutes) and
        # answers on this socket; the answer is read when the child has exited.
        self.loader_pid: int | None = None
        self.loader_answer: socket.socket | None = None
        self.reload_again = False  # SIGHUP while loading: the file may have changed again
        self.ingester_started = 0.0
        self.ingester_restart_at: float | None = None  # it died: a new one then
        self.ingester_backoff = Backoff(**INGESTER_BACKOFF)

    # The loop

    def run(self) -> int:
        if self.config.user:
            child_process.drop_privileges(self.config.user)
        check_media_readable(self.config)
        # Asked once here, the ffmpeg versions are known to every worker forked from us; each
        # would otherwise run `ffmpeg -version` once or twice (60-80 ms of CPU) as it starts,
        # which put 3.7 s into the first byte of 50 channels tuned in at once.
        for binary in {ffmpeg_binary(), ffmpeg_binary(cold_burst=True)}:
            ffmpeg_version(binary)
        prctl.set_child_subreaper(1)
        prctl.set_proctitle("retrovue-air: supervisor")
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            signal.signal(signum, lambda *_: None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.spawn_front()
        self.spawn_ingester()
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
        usage = os.times()
        log.info("stopped after %.2f s, using %.2f s of CPU", time.monotonic() - self.started,
                 usage.user + usage.system)
        return 0

    def children(self) -> list[int]:
        return (([self.front_pid] if self.front_pid else []) + list(self.workers)
                + ([self.ingester_pid] if self.ingester_pid else []) + ([self.loader_pid] if self.loader_pid else []))

    def timeout(self) -> float | None:
        deadlines = [self.next_ping, self.front_restart_at, self.ingester_restart_at,
                     self.shutdown_deadline if self.stopping else None,
                     *(w.stop_deadline for w in self.workers.values())]
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
        overdue = [pid for pid, w in self.workers.items() if w.stop_deadline is not None and w.stop_deadline <= now]
        for pid in overdue:
            log.warning("air_worker pid %d did not stop within %g s: killing it", pid, STOP_GRACE_SECONDS)
            self.workers[pid].stop_deadline = None
            self.kill([pid], signal.SIGKILL)
        if self.front_restart_at is not None and now >= self.front_restart_at and not self.stopping:
            self.front_restart_at = None
            self.spawn_front()
        if self.ingester_restart_at is not None and now >= self.ingester_restart_at and not self.stopping:
            self.ingester_restart_at = None
            self.spawn_ingester()

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
        """Reload the configuration: loaded by a child, so that this loop goes on (the watchdog,
        tune-ins, reaping) however long its media take to probe; applied when it answers."""
        if self.stopping:
            return
        if self.loader_pid is not None:
            log.info("SIGHUP: a reload is under way: loading again when it is done")
            self.reload_again = True
            return
        self.start_loader()

    def start_loader(self) -> None:
        path = self.config.path
        self.notifier.reloading()
        ours, theirs = wire.socket_pair()

        def run() -> int:
            ours.close()
            child_process.become("config loader", "config_loader", self.pid)
            send_loaded_config(path, theirs)
            return 0

        try:
            self.loader_pid = self.spawn("config loader", run, keep=())
        except OSError as e:
            ours.close()
            log.error("SIGHUP: cannot start a config loader (%s): keeping the running configuration", e.strerror)
            self.notifier.ready()
            return
        finally:
            theirs.close()
        self.loader_answer = ours
        log.info("SIGHUP: loading %s (config loader pid %d)", path, self.loader_pid)

    def loader_exited(self, how: str) -> None:
        """Whatever the loader sent is queued by the time it has exited: read it, then decide."""
        pid, sock = self.loader_pid, self.loader_answer
        self.loader_pid = self.loader_answer = None
        new, refusal = None, f"the config loader (pid {pid}) {how} before it answered"
        try:
            sock.setblocking(False)
            for message, fds in wire.receive_some(sock, limit=1):
                if isinstance(message, wire.Reload) and len(fds) == 1:
                    new = wire.read_config(fds.pop())
                elif isinstance(message, wire.ReloadRefused):
                    refusal = message.reason
                elif isinstance(message, wire.ProtocolError):
                    refusal = f"the config loader's answer is not one: {message}"
                for fd in fds:
                    os.close(fd)
        except Exception as e:  # noqa: BLE001 -- an unreadable answer is a refusal like any other
            refusal = f"the config loader's answer cannot be read: {type(e).__name__}: {e}"
        finally:
            sock.close()
        if self.stopping:
            return
        if new is None:
            log.error("SIGHUP: configuration refused, keeping the running one: %s", refusal)
            self.notifier.ready()
        else:
            try:
                self.take_config(new)
            except Exception:  # noqa: BLE001 -- the supervisor outlives any reload
                log.exception("SIGHUP: the reload failed; running on with the configuration of %s", self.config.path)
                self.notifier.ready()
        if self.reload_again:
            self.reload_again = False
            self.start_loader()

    def take_config(self, new: Config) -> None:
        """Make a loaded configuration the running one: the front is given it, then it is ours."""
        path = new.path
        if new.listen != self.config.listen:
            log.warning("SIGHUP: the listen address changes only on a restart")
        new = replace(new, listen=self.config.listen, user=self.config.user)
        try:
            configuration.check_relay_loops(new)  # against the address actually served (--listen)
        except configuration.ConfigError as e:
            log.error("SIGHUP: configuration refused, keeping the running one: %s", e)
            self.notifier.ready()
            return
        if self.control is not None and self.front_pid is not None:
            try:
                wire.send_config(self.control, wire.Reload(path), new)
            except (OSError, wire.ProtocolError) as e:
                log.error("SIGHUP: cannot hand the configuration to the front (%s): keeping the running one", e)
                self.notifier.ready()
                return
        self.config = new
        check_media_readable(new)
        self.restart_ingester()
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

    def spawn(self, role: str, run, keep: tuple[socket.socket, ...]) -> int:
        """Fork a child that runs run() and exits with its code (raises OSError if fork fails).

        In the child, the supervisor's own loop goes (its signals, selector, wakeup pair)
        and every socket of ours that the role does not keep is closed."""
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in self.SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            self.sel.close()
            self.notifier.close()
            for sock in (self.wake_r, self.wake_w, self.control, self.listener, self.loader_answer):
                if sock is not None and sock not in keep:
                    sock.close()
            code = run()
        except BaseException:
            log.exception("the %s failed", role)
        finally:
            child_process.finish(code)

    def spawn_front(self) -> None:
        sup_end, front_end = wire.socket_pair()
        self.generation += 1
        generation, config = self.generation, self.config

        def run() -> int:
            sup_end.close()
            child_process.become("http_front", "http_front", self.pid)
            return run_front(config, self.listener, front_end, generation)

        try:
            pid = self.spawn("http_front", run, keep=(self.listener,))
        except OSError as e:
            log.error("cannot start http_front (%s): trying again", e)
            sup_end.close()
            self.front_restart_at = time.monotonic() + 1.0
            return
        finally:
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
        """Start the stream's worker, with a private link to the front; any failure is the front's 503."""
        channel = self.config.channel(channel_id)
        if channel is None:
            self.start_failed(channel_id, stream, f"channel {channel_id} is not in the configuration")
            return
        # The link is made before the fork: the worker's end exists before the front
        # could want to tell it anything, and nobody else can name it.
        worker_end, front_end = wire.socket_pair()
        config = self.config

        def run() -> int:
            front_end.close()
            return run_air_worker(channel, config, stream, worker_end, self.pid)

        try:
            pid = self.spawn(f"air worker of channel {channel_id}", run, keep=())
        except OSError as e:
            front_end.close()
            self.start_failed(channel_id, stream, f"cannot start an air worker: {e.strerror}")
            return
        finally:
            worker_end.close()
        self.workers[pid] = AirWorkerRecord(channel_id, stream, self.generation)
        log.info("channel %s: started air_worker pid %d for stream %d", channel_id, pid, stream)
        try:
            self.tell_front(wire.WorkerSpawned(channel_id, stream, pid), fd=front_end.fileno())
        finally:
            front_end.close()

    def start_failed(self, channel_id: str, stream: int, reason: str) -> None:
        log.error("channel %s: stream %d not started: %s", channel_id, stream, reason)
        self.tell_front(wire.StartFailed(channel_id, stream, reason))

    def stop_worker(self, pid: int, why: str) -> None:
        """SIGTERM now, SIGKILL after STOP_GRACE_SECONDS if it is still here."""
        record = self.workers.get(pid)
        if record is None or record.stop_deadline is not None:
            return
        log.info("channel %s: stopping air_worker pid %d: %s", record.channel, pid, why)
        record.stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
        self.kill([pid], signal.SIGTERM)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            how = wait_status_wording(status)
            if pid == self.front_pid:
                self.front_exited(how)
            elif pid == self.ingester_pid:
                self.ingester_exited(status, how)
            elif pid == self.loader_pid:
                self.loader_exited(how)
            elif pid in self.workers:
                record = self.workers.pop(pid)
                level = logging.INFO if status == 0 or self.stopping or record.stop_deadline else logging.WARNING
                log.log(level, "channel %s: air_worker pid %d %s", record.channel, pid, how)
                if record.generation == self.generation:  # an older front's worker is no news to this one
                    self.tell_front(wire.WorkerExited(record.channel, record.stream, pid, how))
            else:
                # We are a subreaper: an orphaned grandchild (an ffmpeg whose worker died) lands here.
                log.info("reaped orphan pid %d (%s)", pid, how)

    # The ingester: one at a time, while a channel wants ingest; started again if it dies

    def spawn_ingester(self) -> None:
        if self.stopping or self.ingester_pid is not None or not any(c.ingest for c in self.config.channels):
            return
        config = self.config

        def run() -> int:
            return run_ingester(config, self.pid)

        self.ingester_started = time.monotonic()
        try:
            self.ingester_pid = self.spawn("ingester", run, keep=())
        except OSError as e:
            delay = self.ingester_backoff.next_delay(ran_for=0.0)
            log.error("cannot start the ingester (%s): trying again in %.1f s", e.strerror, delay)
            self.ingester_restart_at = time.monotonic() + delay
            return
        log.info("started the ingester pid %d", self.ingester_pid)

    def restart_ingester(self) -> None:
        """A new config may list new files or formats: a new ingester works from it."""
        self.ingester_backoff.reset()
        self.ingester_restart_at = None  # a wait after a crash is over: the new config starts now
        if self.ingester_pid is None:
            self.spawn_ingester()
        else:
            self.ingest_again = True
            self.kill([self.ingester_pid], signal.SIGTERM)

    def ingester_exited(self, status: int, how: str) -> None:
        self.ingester_pid = None
        if self.ingest_again:
            self.ingest_again = False
            log.info("the ingester %s", how)
            self.spawn_ingester()
        elif self.stopping or ingester_finished(status):
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == SOME_FILES_FAILED:
                log.warning("the ingester finished; some files could not be ingested (the log says which): "
                            "their channels transcode them live")
            else:
                log.info("the ingester %s", how)
        else:
            # Killed, or crashed: what it had not finished is still to do.
            delay = self.ingester_backoff.next_delay(ran_for=time.monotonic() - self.ingester_started)
            log.warning("the ingester %s: starting a new one in %.1f s", how, delay)
            self.ingester_restart_at = time.monotonic() + delay

    def front_exited(self, how: str) -> None:
        self.front_pid = None
        if self.stopping:
            log.info("http_front %s", how)
            return
        log.error("http_front %s; stopping all streams and restarting it", how)
        for pid in list(self.workers):
            self.stop_worker(pid, "its front is gone")
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
        for message, fds in wire.receive_some(self.control):
            for fd in fds:  # the front sends none
                os.close(fd)
            if message is None:  # the front is gone: reap() hears of it
                self.sel.unregister(self.control)
                self.control.close()
                self.control = None
                return
            if isinstance(message, wire.ProtocolError):
                log.error("bad message from the front: %s", message)
            elif isinstance(message, wire.StartStream):
                if self.stopping:
                    self.start_failed(message.channel, message.stream, "the service is stopping")
                else:
                    self.spawn_air_worker(message.channel, message.stream)
            elif isinstance(message, wire.StopWorker):
                record = self.workers.get(message.pid)
                if record is not None and record.stream == message.stream:
                    self.stop_worker(message.pid, "it did not stop when told")
            elif isinstance(message, wire.FrontReady):
                self.last_pong = time.monotonic()
                if not self.ready_sent:
                    self.ready_sent = True
                    host, port = self.listener.getsockname()[:2]
                    self.notifier.ready(f"serving {self.status_text()} on {host}:{port}")
            elif isinstance(message, wire.Pong):
                self.last_pong = time.monotonic()
                self.notifier.status(f"serving {self.status_text(message.viewers, message.live_channels)}")

    def tell_front(self, message: wire.Message, fd: int | None = None) -> None:
        if self.control is None or self.front_pid is None:
            return
        try:
            wire.send(self.control, message, fd=fd)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.error("cannot tell the front: %s", e)

    def close(self) -> None:
        self.notifier.close()
        signal.set_wakeup_fd(-1)
        self.sel.close()
        for sock in (self.control, self.wake_r, self.wake_w, self.listener, self.loader_answer):
            if sock is not None:
                sock.close()
