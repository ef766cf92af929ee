"""The service's configuration: a TOML file validated into frozen dataclasses.

Every error names the file, the line and the key, because an operator reading a
journal at 3 a.m. should not have to guess which of forty channels is wrong.
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from retrovue_air import device_id as device_ids

CHANNEL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
BUILT_IN = "<built-in>"


class ConfigError(Exception):
    """The first error found; `others` holds the rest, and str() lists them all, one a line."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str):
        self.path, self.line, self.key, self.message = path, line, key, message
        self.others: list[ConfigError] = []
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def __str__(self) -> str:
        return "\n".join([self.args[0], *(e.args[0] for e in self.others)])


@dataclass(frozen=True)
class TestPattern:
    tone_hz: int = 440


@dataclass(frozen=True)
class MediaFiles:
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Relay:
    """Another instance's channel (or any HTTP MPEG-TS stream), passed on without re-encoding."""
    url: str
    remux: bool = False  # through ffmpeg -c copy (HLS, broken timestamps) instead of passing bytes on
    line: int | None = field(default=None, compare=False)  # where url is, for the loop check's errors


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    source: TestPattern | MediaFiles | Relay
    video_kbps: int = 1500
    audio_kbps: int = 128
    width: int = 640
    height: int = 360
    fps: int = 25
    keyframe_seconds: float = 1.0
    join: str = "keyframe"  # where a late joiner starts: the latest keyframe, or the live edge
    # A keyframe joiner starts this far behind the live edge and gets it as fast as it reads:
    # ffmpeg/ffprobe (Plex, Jellyfin) read 5 s of stream before they report its streams.
    join_burst_seconds: float = 6.0
    transcode: bool = True  # False: a source that is already H.264/AAC MPEG-TS goes out as is (-c copy)
    # The guide and the tuner: number is the guide number ("4", "4.1"), always set once
    # validated; logo is an http(s) URL or an absolute path to an image served at /logos/{id}.png.
    number: str = ""
    logo: str | None = None
    group: str | None = None

    @property
    def bytes_per_second(self) -> int:
        # MPEG-TS framing adds a few percent on top of the elementary streams.
        return (self.video_kbps + self.audio_kbps) * 1000 * 105 // 100 // 8


@dataclass(frozen=True)
class Config:
    path: str
    listen: tuple[str, int] = ("127.0.0.1", 8000)
    max_lag_seconds: float = 4.0
    flush_interval: float = 0.2
    # Faults: ffmpeg is restarted with a doubling backoff; more than restart_limit
    # restarts within restart_window_seconds and the channel fails, refusing viewers
    # for failed_retry_seconds.
    restart_limit: int = 5
    restart_window_seconds: float = 60.0
    restart_backoff_seconds: float = 0.5
    failed_retry_seconds: float = 10.0
    start_timeout_seconds: float = 10.0  # worker FD and first byte must arrive within this
    request_timeout_seconds: float = 10.0  # a request head must be complete within this
    # Limits: over any of them a request gets 503 with Retry-After.
    max_connections: int = 4096
    max_connections_per_address: int = 256
    max_viewers_per_channel: int = 1000
    max_active_channels: int = 16
    user: str | None = None  # started as root: drop to this user after binding
    expose_paths: bool = False  # /channels shows media paths in errors (else only file names)
    log_level: str | None = None  # the command line's --log-level overrides it
    channels: tuple[Channel, ...] = field(default_factory=tuple)
    # The guide, the playlist and the tuner emulation.
    public_url: str | None = None  # e.g. "https://tv.example.net" behind a proxy; else the request's Host
    guide_hours: float = 48.0
    device_id: str | None = None  # None: made once and kept in state_dir
    friendly_name: str = "RetroVue Air"
    discovery: bool = False  # answer SSDP (UDP 1900) and HDHomeRun discovery (UDP 65001)
    state_dir: str = field(default_factory=lambda: default_state_dir())

    def channel(self, channel_id: str) -> Channel | None:
        return next((c for c in self.channels if c.id == channel_id), None)


def default_state_dir() -> str:
    # systemd's StateDirectory= may list several, separated by colons: the first is ours.
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return given or os.path.expanduser("~/.local/state/retrovue-air")


def default_config_text() -> str:
    return resources.files("retrovue_air").joinpath("default_config.toml").read_text()


def load_default() -> Config:
    return parse(default_config_text(), BUILT_IN)


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, raw[: e.start].count(b"\n") + 1, None, "not UTF-8") from None
    return parse(text, path)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def parse(text: str, path: str) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = re.search(r"line (\d+)", str(e))
        raise ConfigError(path, int(line.group(1)) if line else None, None, str(e)) from None
    return _Validator(text, path).config(doc)


class _Validator:
    """Turns a parsed TOML document into a Config, locating each bad key in the text.

    tomllib keeps no positions, so a key's line is found again by scanning the text:
    the n-th `[[channel]]` header, then the first `key =` line below it.
    """

    FLOAT_KEYS = ("restart_window_seconds", "restart_backoff_seconds", "failed_retry_seconds",
                  "start_timeout_seconds", "request_timeout_seconds")
    INT_KEYS = ("restart_limit", "max_connections", "max_connections_per_address",
                "max_viewers_per_channel", "max_active_channels")
    TOP_KEYS = {"listen", "max_lag_seconds", "flush_interval_ms", "channel", "user",
                "log_level", "expose_paths", *FLOAT_KEYS, *INT_KEYS}
    CHANNEL_KEYS = {"id", "name", "source", "tone_hz", "file", "files", "video_kbps",
                    "audio_kbps", "width", "height", "fps", "keyframe_seconds", "join",
                    "transcode", "url", "remux"}
    # What a relay's origin decides, not the relay: refused on a relay channel.
    ENCODING_KEYS = ("width", "height", "fps", "keyframe_seconds", "tone_hz", "file", "files", "transcode")
    TOP_KEYS |= {"public_url", "guide_hours", "device_id", "friendly_name", "discovery", "state_dir"}
    CHANNEL_KEYS |= {"number", "logo", "group"}
    CHANNEL_KEYS |= {"join_burst_seconds"}

    def __init__(self, text: str, path: str):
        self.lines = text.splitlines()
        self.path = path

    def error(self, key: str, message: str, channel_index: int | None = None) -> ConfigError:
        return ConfigError(self.path, self.line_of(key, channel_index), key, message)

    def line_of(self, key: str, channel_index: int | None) -> int | None:
        key_line = re.compile(rf"\s*{re.escape(key)}\s*=")
        start, seen = 0, -1
        if channel_index is not None:
            for number, line in enumerate(self.lines):
                if re.match(r"\s*\[\[\s*channel\s*\]\]", line):
                    seen += 1
                    if seen == channel_index:
                        start = number
                        break
            else:
                return None
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if number > start and line.lstrip().startswith("[") and channel_index is not None:
                break
            if key_line.match(line):
                return number + 1
        return start + 1 if channel_index is not None else None

    @contextlib.contextmanager
    def collecting(self):
        """Note an error and go on, so that one run reports every broken key at once."""
        try:
            yield
        except ConfigError as e:
            self.errors.append(e)

    def config(self, doc: dict[str, Any]) -> Config:
        self.errors: list[ConfigError] = []
        for key in doc:
            if key not in self.TOP_KEYS:
                with self.collecting():
                    raise self.error(key, "unknown key")
        kwargs: dict[str, Any] = {}
        if "listen" in doc:
            with self.collecting():
                try:
                    kwargs["listen"] = parse_listen(self.typed(doc, "listen", str))
                except ValueError as e:
                    raise self.error("listen", str(e)) from None
        if "max_lag_seconds" in doc:
            with self.collecting():
                kwargs["max_lag_seconds"] = self.positive(doc, "max_lag_seconds", None)
        if "flush_interval_ms" in doc:
            with self.collecting():
                kwargs["flush_interval"] = self.positive(doc, "flush_interval_ms", None) / 1000
        for key in self.FLOAT_KEYS + self.INT_KEYS:
            if key in doc:
                with self.collecting():
                    kwargs[key] = self.positive(doc, key, None, float if key in self.FLOAT_KEYS else int)
        if "user" in doc:
            with self.collecting():
                user = self.typed(doc, "user", str)
                try:
                    pwd.getpwnam(user)
                except KeyError:
                    raise self.error("user", f"no such user {user!r}") from None
                kwargs["user"] = user
        if "expose_paths" in doc:
            with self.collecting():
                kwargs["expose_paths"] = self.typed(doc, "expose_paths", bool)
        if "log_level" in doc:
            with self.collecting():
                level = self.typed(doc, "log_level", str).upper()
                if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                    raise self.error("log_level", f"unknown level {level!r} (debug, info, warning, error)")
                kwargs["log_level"] = level
        tables = doc.get("channel", [])
        channels: list[Channel] = []
        with self.collecting():
            if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
                raise self.error("channel", "must be an array of tables: [[channel]]")
            if not tables:
                raise ConfigError(self.path, None, "channel", "no channel is configured")
            for i, t in enumerate(tables):
                with self.collecting():
                    channels.append(self.channel(t, i))
                    if sum(1 for c in channels if c.id == channels[-1].id) > 1:
                        raise self.error("id", f"duplicate channel id {channels[-1].id!r}", i)
        kwargs.update(self.guide_and_tuner(doc))
        channels = self.guide_numbers(channels, tables)
        if not self.errors:
            self.errors += relay_loops(channels, kwargs.get("listen", Config.listen), self.path)
        if self.errors:
            first, *others = self.errors
            first.others = others
            raise first
        return Config(path=self.path, channels=tuple(channels), **kwargs)

    def typed(self, table: dict, key: str, kind: type, index: int | None = None) -> Any:
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.error(key, f"must be {kind.__name__}, got {type(value).__name__}", index)
        return value

    def positive(self, table: dict, key: str, index: int | None, kind: type = float) -> Any:
        value = self.typed(table, key, kind, index)
        if not math.isfinite(value) or value <= 0:
            raise self.error(key, "must be greater than 0 (and finite)", index)
        return value

    def channel(self, t: dict[str, Any], i: int) -> Channel:
        for key in t:
            if key not in self.CHANNEL_KEYS:
                raise self.error(key, "unknown key", i)
        for key in ("id", "name", "source"):
            if key not in t:
                raise self.error(key, "missing", i)
        channel_id = self.typed(t, "id", str, i)
        if not CHANNEL_ID.match(channel_id):
            raise self.error("id", f"{channel_id!r} is not 1-64 of A-Z a-z 0-9 _ -", i)
        name = self.typed(t, "name", str, i)
        kind = self.typed(t, "source", str, i)
        for key in ("url", "remux"):
            if key in t and kind != "relay":
                raise self.error(key, "only for source = \"relay\"", i)
        if kind == "test-pattern":
            for key in ("file", "files"):
                if key in t:
                    raise self.error(key, "only for source = \"files\"", i)
            tone = self.positive(t, "tone_hz", i, int) if "tone_hz" in t else 440
            source: TestPattern | MediaFiles = TestPattern(tone_hz=tone)
        elif kind == "files":
            source = MediaFiles(paths=self.media_paths(t, i))
        elif kind == "relay":
            source = self.relay(t, i)
        else:
            raise self.error("source", f"unknown source {kind!r} (test-pattern, files, relay)", i)
        numbers = {key: self.positive(t, key, i, int)
                   for key in ("video_kbps", "audio_kbps", "width", "height", "fps") if key in t}
        if "keyframe_seconds" in t:
            kf = self.positive(t, "keyframe_seconds", i)
            if kf > 2:
                raise self.error("keyframe_seconds", "at most 2 (late joiners wait for a keyframe)", i)
            numbers["keyframe_seconds"] = kf
        if "join" in t:
            join = self.typed(t, "join", str, i)
            if join not in ("keyframe", "live"):
                raise self.error("join", f"unknown join mode {join!r} (keyframe, live)", i)
            numbers["join"] = join
        if "join_burst_seconds" in t:
            burst = self.typed(t, "join_burst_seconds", float, i)
            if not 0 <= burst <= 30 or math.isnan(burst):
                raise self.error("join_burst_seconds", "between 0 (no burst) and 30", i)
            numbers["join_burst_seconds"] = burst
        if "transcode" in t:
            if kind != "files":
                raise self.error("transcode", "only for source = \"files\"", i)
            numbers["transcode"] = self.typed(t, "transcode", bool, i)
        numbers.update(self.channel_guide_keys(t, i))
        return Channel(id=channel_id, name=name, source=source, **numbers)

    def relay(self, t: dict[str, Any], i: int) -> Relay:
        for key in self.ENCODING_KEYS:
            if key in t:
                raise self.error(key, "not for source = \"relay\" (the origin encodes)", i)
        if "url" not in t:
            raise self.error("url", "source = \"relay\" needs url = \"http://HOST:PORT/channels/ID.ts\"", i)
        url = self.typed(t, "url", str, i)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises on a port that is not a number
        except ValueError as e:
            raise self.error("url", f"not a URL: {e}", i) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error("url", f"expected http://HOST[:PORT]/PATH, got {url!r}", i)
        remux = self.typed(t, "remux", bool, i) if "remux" in t else False
        return Relay(url=url, remux=remux, line=self.line_of("url", i))

    def media_paths(self, t: dict[str, Any], i: int) -> tuple[str, ...]:
        if ("file" in t) == ("files" in t):
            raise self.error("files", "source = \"files\" needs exactly one of file = \"…\" or files = [\"…\"]", i)
        key = "file" if "file" in t else "files"
        value = t[key]
        paths = [value] if key == "file" else value
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise self.error(key, "must be a path or a non-empty list of paths", i)
        base = os.path.dirname(os.path.abspath(self.path)) if self.path != BUILT_IN else os.getcwd()
        resolved = []
        for p in paths:
            full = os.path.join(base, os.path.expanduser(p))
            if not os.path.isfile(full):
                raise self.error(key, f"no such media file: {full}", i)
            if not os.access(full, os.R_OK):
                raise self.error(key, f"media file is not readable: {full}", i)
            resolved.append(full)
        return tuple(resolved)

    # The guide, the playlist and the tuner emulation

    def guide_and_tuner(self, doc: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if "public_url" in doc:
            with self.collecting():
                url = self.typed(doc, "public_url", str).rstrip("/")
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment \
                        or any(c.isspace() or c in "\"'<>" for c in url):
                    raise self.error("public_url", f"expected http(s)://HOST[:PORT][/PATH], got {url!r}")
                kwargs["public_url"] = url
        if "guide_hours" in doc:
            with self.collecting():
                hours = self.positive(doc, "guide_hours", None)
                if hours > MAX_GUIDE_HOURS:
                    raise self.error("guide_hours", f"at most {MAX_GUIDE_HOURS} (two weeks)")
                kwargs["guide_hours"] = hours
        if "device_id" in doc:
            with self.collecting():
                given = self.typed(doc, "device_id", str)
                if not device_ids.FORMAT.match(given):
                    raise self.error("device_id", f"{given!r} is not 8 hex digits")
                if not device_ids.is_valid(given):
                    fixed = device_ids.with_checksum(int(given, 16) >> 4)
                    raise self.error("device_id", f"{given} fails the HDHomeRun checksum that tuner clients "
                                                  f"check; {fixed} passes")
                kwargs["device_id"] = given.upper()
        if "friendly_name" in doc:
            with self.collecting():
                kwargs["friendly_name"] = self.one_line(doc, "friendly_name", None)
        if "discovery" in doc:
            with self.collecting():
                kwargs["discovery"] = self.typed(doc, "discovery", bool)
        if "state_dir" in doc:
            with self.collecting():
                kwargs["state_dir"] = os.path.join(self.base_dir(), os.path.expanduser(self.typed(doc, "state_dir", str)))
        return kwargs

    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path)) if self.path != BUILT_IN else os.getcwd()

    def one_line(self, table: dict, key: str, index: int | None) -> str:
        value = self.typed(table, key, str, index)
        if not value.strip() or any(c in value for c in "\r\n\0"):
            raise self.error(key, "must be one non-empty line", index)
        return value.strip()

    def channel_guide_keys(self, t: dict[str, Any], i: int) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        if "number" in t:
            value = t["number"]
            if isinstance(value, float):
                raise self.error("number", f'write it as a string: number = "{value}" (a float loses digits)', i)
            number = str(value) if isinstance(value, int) and not isinstance(value, bool) else \
                self.typed(t, "number", str, i)
            if not GUIDE_NUMBER.match(number):
                raise self.error("number", f"{number!r} is not a guide number: digits with at most one dot "
                                           "(\"4\", \"4.1\")", i)
            keys["number"] = number
        if "logo" in t:
            keys["logo"] = self.logo(self.one_line(t, "logo", i), i)
        if "group" in t:
            keys["group"] = self.one_line(t, "group", i)
        return keys

    def logo(self, value: str, i: int) -> str:
        if value.startswith(("http://", "https://")):
            if any(c.isspace() or c in "\"'<>" for c in value):
                raise self.error("logo", f"not a usable URL: {value!r}", i)
            return value
        full = os.path.join(self.base_dir(), os.path.expanduser(value))
        try:
            with open(full, "rb") as f:
                head = f.read(16)
                size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise self.error("logo", f"cannot read the image {full}: {e.strerror}", i) from None
        if image_type(head) is None:
            raise self.error("logo", f"{full} is not a PNG, JPEG, GIF or WebP image", i)
        if size > MAX_LOGO_BYTES:
            raise self.error("logo", f"{full} is larger than {MAX_LOGO_BYTES // 1024} KiB", i)
        return full

    def guide_numbers(self, channels: list[Channel], tables: list) -> list[Channel]:
        """Give every channel a unique guide number: its own `number`, else its id when the id
        is one ("4"), else its position in the file (or the next number still free)."""
        position = {}
        for i, t in enumerate(tables if isinstance(tables, list) else []):
            if isinstance(t, dict):
                position.setdefault(t.get("id"), i)
        owner: dict[str, str] = {}
        for c in channels:
            number = c.number or (c.id if GUIDE_NUMBER.match(c.id) else "")
            if not number:
                continue
            with self.collecting():
                if number in owner:
                    key = "number" if c.number else "id"
                    raise self.error(key, f"guide number {number} is taken by channel {owner[number]!r}"
                                          + ("" if c.number else f" (set number = \"…\" for channel {c.id!r})"),
                                     position.get(c.id))
                owner[number] = c.id
        numbered = []
        for c in channels:
            number = c.number or (c.id if GUIDE_NUMBER.match(c.id) else "")
            if not number:
                candidate = position.get(c.id, 0) + 1
                while str(candidate) in owner:
                    candidate += 1
                number = str(candidate)
                owner[number] = c.id
            numbered.append(replace(c, number=number))
        return numbered


# Digits with at most one dot, never "_": Jellyfin splits its channel ids ("hdhr_4.1") on "_".
GUIDE_NUMBER = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?\Z")
MAX_GUIDE_HOURS = 14 * 24
MAX_LOGO_BYTES = 1024 * 1024
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def image_type(head: bytes) -> str | None:
    """The Content-Type of an image from its first bytes, or None if it is none we serve."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _IMAGE_MAGIC if head.startswith(magic)), None)


# Relay loops: a relay that pulls, directly or through other relays of this instance,
# from itself would start a pull that starts itself, for ever.

LOCAL_NAMES = {"localhost", "localhost.localdomain", "0.0.0.0", "::", "::1", "ip6-localhost"}


def is_local_host(host: str) -> bool:
    host = host.lower().strip("[]")
    return host in LOCAL_NAMES or host.startswith("127.") or host in (socket.gethostname().lower(),
                                                                        socket.getfqdn().lower())


def same_listener(host: str, port: int, listen: tuple[str, int]) -> bool:
    """Whether host:port reaches the instance listening on `listen` (loopback and 0.0.0.0 alike)."""
    listen_host, listen_port = listen
    if port != listen_port:
        return False
    if host.lower().strip("[]") == listen_host.lower():
        return True
    # Listening on every address, or both on this machine's loopback: the same socket.
    return is_local_host(host) and (is_local_host(listen_host) or listen_host in ("", "0.0.0.0", "::"))


CHANNEL_PATH = re.compile(r"/channels/([A-Za-z0-9_-]{1,64})\.ts\Z")
TUNER_PATH = re.compile(r"/auto/v([0-9.]+)\Z")  # the HDHomeRun tuner's, by guide number


def relayed_channel(url: str, listen: tuple[str, int], numbers: dict[str, str]) -> str | None:
    """The id of this instance's own channel that `url` asks for, or None if it is elsewhere.

    numbers maps guide numbers to channel ids, for a URL of the tuner's /auto/v{number}."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not same_listener(parts.hostname or "", port, listen):
        return None
    if m := CHANNEL_PATH.match(parts.path):
        return m.group(1)
    if m := TUNER_PATH.match(parts.path):
        return numbers.get(m.group(1))
    return None


def relay_loops(channels: list[Channel] | tuple[Channel, ...], listen: tuple[str, int],
                path: str) -> list[ConfigError]:
    """One error per relay channel whose chain of this instance's channels comes back to it."""
    by_id = {c.id: c for c in channels}
    numbers = {c.number: c.id for c in channels if getattr(c, "number", "")}
    errors = []
    for channel in channels:
        seen = [channel.id]
        current = channel
        while isinstance(current.source, Relay):
            target = relayed_channel(current.source.url, listen, numbers)
            if target is None or target not in by_id:
                break
            if target in seen:
                chain = " -> ".join(seen + [target])
                errors.append(ConfigError(path, channel.source.line, "url",
                                          f"relay loop: {channel.source.url} is this instance "
                                          f"({listen[0]}:{listen[1]}) and leads back to channel "
                                          f"{channel.id!r} ({chain})"))
                break
            seen.append(target)
            current = by_id[target]
    return errors


def check_relay_loops(config: Config) -> None:
    """Raise for a relay loop; for a listen address set after loading (--listen)."""
    errors = relay_loops(config.channels, config.listen, config.path)
    if errors:
        first, *others = errors
        first.others = others
        raise first
