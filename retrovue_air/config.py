"""The service's configuration: a TOML file validated into frozen dataclasses.

Every error names the file, the line and the key, because an operator reading a
journal at 3 a.m. should not have to guess which of forty channels is wrong.
"""

from __future__ import annotations

import contextlib
import json
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
from zoneinfo import ZoneInfo

from retrovue_air import device_id as device_ids
from retrovue_air import media_info, safe_files, url_secrets
from retrovue_air.media_info import Picture
from retrovue_air.schedule import DEFAULT_EPOCH, Block, Programme, Schedule, parse_daily_time, parse_epoch

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
    # Built from the config with every file probed; None only where code builds one by hand.
    schedule: Schedule | None = None
    silent: frozenset[str] = frozenset()  # files with no audio stream: the air fills in silence
    start_times: tuple[tuple[str, float], ...] = ()  # (path, first timestamp) where it is not 0
    pictures: tuple[tuple[str, Picture], ...] = ()  # (path, its video's shape): what the decoder scales


@dataclass(frozen=True)
class Relay:
    """Another instance's channel (or any HTTP MPEG-TS stream), passed on without re-encoding."""
    url: str
    remux: bool = False  # through ffmpeg -c copy (HLS, broken timestamps) instead of passing bytes on
    # An origin's redirect may point anywhere, an address inside our network too: followed only if asked.
    follow_redirects: bool = False
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
    ingest: bool = False  # play from the house-format cache once a file is in it (issue 13)

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
    # An HLS client is a lease its requests renew: a player polls every target duration, so
    # three of them and a little more without a request means it has gone.
    hls_idle_seconds: float = 8.0
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
    # Ingest (issue 13): where house-format copies live (None: <state_dir>/cache), how much of
    # the disk they may take (None: no limit), how many files are transcoded at once.
    cache_dir: str | None = None
    cache_max_gb: float | None = None
    ingest_jobs: int = 1

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


_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")
_CHANNEL_HEADER = re.compile(r"\s*\[\[\s*channel\s*\]\]")
_BLOCK_HEADER = re.compile(r"\s*\[\[\s*channel\.block\s*\]\]")
TOP = -1  # the top level's "header": before the first line


class TextPositions:
    """Where the tables, keys and string values of a TOML text are: tomllib keeps no positions.

    The text is indexed in one pass (each table's header line, the first line of each key in
    it, where it ends); a value is searched for from where the previous value of the same key
    was found. Validating n file entries then reads each line about once, not once per entry.
    """

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.channels: list[int] = []  # the line index of each [[channel]]
        self.blocks: dict[int, list[int]] = {}  # a channel's number: its [[channel.block]] lines
        self.keys: dict[int, dict[str, int]] = {TOP: {}}  # a table's header line: key -> first line
        self.ends: dict[int, int] = {}  # a table's header line: the line after its last
        self.anywhere: dict[str, int] = {}
        self.cursors: dict[tuple[int, str], int] = {}
        table = TOP
        for number, line in enumerate(self.lines):
            if line.lstrip().startswith("["):
                self.ends[table], table = number, number
                self.keys[table] = {}
                if _CHANNEL_HEADER.match(line):
                    self.channels.append(number)
                elif _BLOCK_HEADER.match(line) and self.channels:
                    self.blocks.setdefault(len(self.channels) - 1, []).append(number)
            elif m := _KEY.match(line):
                self.keys[table].setdefault(m.group(1), number)
                self.anywhere.setdefault(m.group(1), number)
        self.ends[table] = len(self.lines)

    def header(self, channel: int, block: int | None = None) -> int | None:
        """The line index of the channel-th [[channel]], or of its block-th [[channel.block]]."""
        if not 0 <= channel < len(self.channels):
            return None
        if block is None:
            return self.channels[channel]
        blocks = self.blocks.get(channel, [])
        return blocks[block] if 0 <= block < len(blocks) else None

    def key_line(self, key: str, channel: int | None = None, block: int | None = None) -> int | None:
        """The line (from 1) of key: anywhere for a top-level key; in a channel or a block, there,
        else that table's header line; None when there is no such table or key."""
        if channel is None:
            number = self.anywhere.get(key)
            return None if number is None else number + 1
        header = self.header(channel, block)
        if header is None:
            return None
        return self.keys[header].get(key, header) + 1

    def value_line(self, value: str, key: str, channel: int, block: int | None = None) -> int | None:
        """The line where a string of key's value (a file's path) is written, else the key's line."""
        first = self.key_line(key, channel, block)
        header = self.header(channel, block)
        if first is None or header is None:
            return first
        written = (f'"{value}"', f"'{value}'", json.dumps(value, ensure_ascii=False))  # as is, literal, escaped
        cursor = self.cursors.get((header, key), first - 1)
        for start in dict.fromkeys((cursor, first - 1)):  # on from the last one found; else from the top
            for number in range(start, self.ends[header]):
                if any(w in self.lines[number] for w in written):
                    self.cursors[(header, key)] = number
                    return number + 1
        return first


class _Validator:
    """Turns a parsed TOML document into a Config, locating each bad key in the text."""

    FLOAT_KEYS = ("restart_window_seconds", "restart_backoff_seconds", "failed_retry_seconds",
                  "start_timeout_seconds", "request_timeout_seconds")
    INT_KEYS = ("restart_limit", "max_connections", "max_connections_per_address",
                "max_viewers_per_channel", "max_active_channels")
    TOP_KEYS = {"listen", "max_lag_seconds", "flush_interval_ms", "channel", "user",
                "log_level", "expose_paths", *FLOAT_KEYS, *INT_KEYS}
    CHANNEL_KEYS = {"id", "name", "source", "tone_hz", "file", "files", "video_kbps",
                    "audio_kbps", "width", "height", "fps", "keyframe_seconds", "join",
                    "transcode", "url", "remux", "follow_redirects"}
    # What a relay's origin decides, not the relay: refused on a relay channel.
    ENCODING_KEYS = ("width", "height", "fps", "keyframe_seconds", "tone_hz", "file", "files", "transcode")
    TOP_KEYS |= {"public_url", "guide_hours", "device_id", "friendly_name", "discovery", "state_dir"}
    CHANNEL_KEYS |= {"number", "logo", "group"}
    CHANNEL_KEYS |= {"join_burst_seconds"}
    FLOAT_KEYS += ("hls_idle_seconds",)
    TOP_KEYS |= {"hls_idle_seconds"}
    # Schedules (issue 10): where the loop starts, whose clock the daily blocks follow.
    SCHEDULE_TOP_KEYS = {"state_dir", "schedule_epoch", "timezone"}
    SCHEDULE_CHANNEL_KEYS = {"schedule_epoch", "timezone", "block"}
    ITEM_KEYS = {"path", "title", "episode", "season", "description", "category"}
    BLOCK_KEYS = {"start", "title", "file", "files"}
    TOP_KEYS |= SCHEDULE_TOP_KEYS
    CHANNEL_KEYS |= SCHEDULE_CHANNEL_KEYS
    # Ingest to the house format (issue 13).
    TOP_KEYS |= {"ingest", "cache_dir", "cache_max_gb", "ingest_jobs"}
    CHANNEL_KEYS |= {"ingest"}

    def __init__(self, text: str, path: str):
        self.positions = TextPositions(text)
        self.path = path

    def error(self, key: str, message: str, channel_index: int | None = None) -> ConfigError:
        return ConfigError(self.path, self.line_of(key, channel_index), key, message)

    def line_of(self, key: str, channel_index: int | None) -> int | None:
        return self.positions.key_line(key, channel_index)

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
        self.schedule_defaults = {"schedule_epoch": DEFAULT_EPOCH, "timezone": "UTC"}
        with self.collecting():
            self.schedule_defaults.update(self.schedule_keys(doc, None))
        self.ingest_default = False
        with self.collecting():
            kwargs.update(self.ingest_keys(doc))
        # state_dir itself is checked with the tuner's keys; the probe cache needs it first.
        given = doc.get("state_dir")
        self.media_cache = media_info.MediaInfoCache(
            os.path.join(self.base_dir(), os.path.expanduser(given)) if isinstance(given, str) else default_state_dir())
        tables = doc.get("channel", [])
        channels: list[Channel] = []
        with self.collecting():
            if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
                raise self.error("channel", "must be an array of tables: [[channel]]")
            if not tables:
                raise ConfigError(self.path, None, "channel", "no channel is configured")
            ids: set[str] = set()
            for i, t in enumerate(tables):
                with self.collecting():
                    channels.append(self.channel(t, i))
                    if channels[-1].id in ids:
                        raise self.error("id", f"duplicate channel id {channels[-1].id!r}", i)
                    ids.add(channels[-1].id)
        self.media_cache.save()
        kwargs.update(self.guide_and_tuner(doc))
        channels = self.guide_numbers(channels, tables)
        if any(c.ingest for c in channels):
            with self.collecting():
                self.check_cache_dir(kwargs)
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
        for key in ("url", "remux", "follow_redirects"):
            if key in t and kind != "relay":
                raise self.error(key, "only for source = \"relay\"", i)
        if kind == "test-pattern":
            for key in ("file", "files"):
                if key in t:
                    raise self.error(key, "only for source = \"files\"", i)
            tone = self.positive(t, "tone_hz", i, int) if "tone_hz" in t else 440
            source: TestPattern | MediaFiles = TestPattern(tone_hz=tone)
        elif kind == "files":
            source = self.media_source(t, i)
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
        for key in self.SCHEDULE_CHANNEL_KEYS:
            if key in t and kind != "files":
                raise self.error(key, "only for source = \"files\"", i)
        if "transcode" in t:
            if kind != "files":
                raise self.error("transcode", "only for source = \"files\"", i)
            numbers["transcode"] = self.typed(t, "transcode", bool, i)
        numbers.update(self.channel_guide_keys(t, i))
        numbers.update(self.channel_ingest(t, i, kind))
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
            raise self.error("url", f"expected http://HOST[:PORT]/PATH, got {url_secrets.redacted(url)!r}", i)
        remux = self.typed(t, "remux", bool, i) if "remux" in t else False
        follow = self.typed(t, "follow_redirects", bool, i) if "follow_redirects" in t else False
        return Relay(url=url, remux=remux, follow_redirects=follow, line=self.line_of("url", i))

    # --- Ingest to the house format (issue 13) -----------------------------------------------

    def ingest_keys(self, doc: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "ingest" in doc:
            self.ingest_default = self.typed(doc, "ingest", bool)
        if "cache_dir" in doc:
            with self.collecting():
                given = self.typed(doc, "cache_dir", str)
                if not given.strip():
                    raise self.error("cache_dir", "must be a directory path")
                out["cache_dir"] = os.path.join(self.base_dir(), os.path.expanduser(given))
        if "cache_max_gb" in doc:
            with self.collecting():
                out["cache_max_gb"] = self.positive(doc, "cache_max_gb", None)
        if "ingest_jobs" in doc:
            with self.collecting():
                jobs = self.positive(doc, "ingest_jobs", None, int)
                if jobs > 16:
                    raise self.error("ingest_jobs", "at most 16")
                out["ingest_jobs"] = jobs
        return out

    def check_cache_dir(self, kwargs: dict[str, Any]) -> None:
        """Whoever can write the cache decides what the channels play: its entries' names are
        predictable, so a directory others can write is refused, as ssh refuses a loose key."""
        user = kwargs.get("user")
        uid = pwd.getpwnam(user).pw_uid if user and os.geteuid() == 0 else os.geteuid()
        if "cache_dir" in kwargs:
            problem = safe_files.private_directory_problem(kwargs["cache_dir"], uid)
            if problem:
                raise self.error("cache_dir", problem)
            return
        directory = os.path.join(kwargs.get("state_dir") or default_state_dir(), "cache")
        problem = safe_files.private_directory_problem(directory, uid)
        if problem:
            where = "state_dir" if "state_dir" in kwargs else "cache_dir"
            raise ConfigError(self.path, self.line_of(where, None), where,
                              f"{problem} (the ingest cache, {directory}, is there: cache_dir is not set)")

    def channel_ingest(self, t: dict[str, Any], i: int, kind: str) -> dict[str, Any]:
        """A transcoded files channel takes the top-level `ingest` unless it says otherwise."""
        if "ingest" not in t:
            wanted = self.ingest_default and kind == "files" and t.get("transcode", True) is not False
            return {"ingest": True} if wanted else {}
        if kind != "files":
            raise self.error("ingest", "only for source = \"files\"", i)
        ingest = self.typed(t, "ingest", bool, i)
        if ingest and t.get("transcode", True) is False:
            raise self.error("ingest", "a channel with transcode = false already plays its files as they are", i)
        return {"ingest": ingest}

    # --- Scheduled media (issue 10) -------------------------------------------------------

    def schedule_keys(self, table: dict[str, Any], i: int | None) -> dict[str, Any]:
        """schedule_epoch and timezone, at the top or in a channel."""
        out: dict[str, Any] = {}
        if "schedule_epoch" in table:
            try:
                out["schedule_epoch"] = parse_epoch(self.typed(table, "schedule_epoch", str, i))
            except ValueError as e:
                raise self.error("schedule_epoch", str(e), i) from None
        if "timezone" in table:
            zone = self.typed(table, "timezone", str, i)
            try:
                ZoneInfo(zone)
            except (ValueError, KeyError, OSError):
                raise self.error("timezone", f"unknown time zone {zone!r} (an IANA name like Europe/Berlin)",
                                 i) from None
            out["timezone"] = zone
        return out

    def media_source(self, t: dict[str, Any], i: int) -> MediaFiles:
        self.transcoding = t.get("transcode", True) is not False
        settings = {**self.schedule_defaults, **self.schedule_keys(t, i)}
        silent: set[str] = set()
        self.start_times: dict[str, float] = {}
        self.pictures: dict[str, Picture] = {}
        playlist = self.programmes(t, i, None, silent)
        blocks = t.get("block", [])
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise self.error("block", "must be an array of tables: [[channel.block]]", i)
        made: list[Block] = []
        for k, b in enumerate(blocks):
            for key in b:
                if key not in self.BLOCK_KEYS:
                    raise self.block_error(key, "unknown key", i, k)
            if "start" not in b:
                raise self.block_error("start", "missing (a local time like \"20:00\")", i, k)
            if not isinstance(b["start"], str):
                raise self.block_error("start", "must be a string like \"20:00\"", i, k)
            try:
                start = parse_daily_time(b["start"])
            except ValueError as e:
                raise self.block_error("start", str(e), i, k) from None
            if any(other.start == start for other in made):
                raise self.block_error("start", f"another block already starts at {b['start']}", i, k)
            title = b.get("title")
            if title is not None and not isinstance(title, str):
                raise self.block_error("title", "must be a string", i, k)
            made.append(Block(start, tuple(self.programmes(b, i, k, silent)), title or None))
        paths = tuple(p.path for p in playlist)
        schedule = Schedule(tuple(playlist), tuple(made), settings["schedule_epoch"], settings["timezone"])
        return MediaFiles(paths=paths, schedule=schedule, silent=frozenset(silent),
                          start_times=tuple(sorted(self.start_times.items())),
                          pictures=tuple(sorted(self.pictures.items())))

    def block_error(self, key: str, message: str, i: int, k: int) -> ConfigError:
        return ConfigError(self.path, self.block_line_of(key, i, k), f"block.{key}", message)

    def block_line_of(self, key: str, i: int, k: int) -> int | None:
        """The line of `key` in the k-th [[channel.block]] of the i-th channel."""
        return self.positions.key_line(key, i, k)

    def programmes(self, t: dict[str, Any], i: int, k: int | None, silent: set[str]) -> list[Programme]:
        """The file or files of a channel (k None) or of its k-th block, each probed."""
        def error(key: str, message: str, line: int | None = None) -> ConfigError:
            if k is not None:
                return ConfigError(self.path, line or self.block_line_of(key, i, k), f"block.{key}", message)
            return ConfigError(self.path, line or self.line_of(key, i), key, message)

        if ("file" in t) == ("files" in t):
            raise error("files", ("a block" if k is not None else "source = \"files\"")
                        + " needs exactly one of file = \"…\" or files = [\"…\"]")
        key = "file" if "file" in t else "files"
        items = [t[key]] if key == "file" else t[key]
        if not isinstance(items, list) or not items or not all(isinstance(p, (str, dict)) for p in items):
            raise error(key, "must be a path or a non-empty list of paths (or of { path = \"…\", title = \"…\" })")
        base = self.base_dir()
        out = []
        for item in items:
            meta = item if isinstance(item, dict) else {"path": item}
            raw = meta.get("path")
            for name, value in meta.items():
                if name not in self.ITEM_KEYS:
                    raise error(key, f"unknown key {name!r} in a file entry ({', '.join(sorted(self.ITEM_KEYS))})")
                kind = int if name in ("episode", "season") else str
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise error(key, f"{name} of a file entry must be {kind.__name__}")
            if raw is None:
                raise error(key, "a file entry needs path = \"…\"")
            line = self.positions.value_line(raw, key, i, k)
            full = os.path.join(base, os.path.expanduser(raw))
            if not os.path.isfile(full):
                raise error(key, f"no such media file: {full}", line)
            if not os.access(full, os.R_OK):
                raise error(key, f"media file is not readable: {full}", line)
            try:
                st = os.stat(full)
                info = self.media_cache.info(full)
            except media_info.ProbeError as e:
                raise error(key, f"cannot use media file {full}: {e}", line) from None
            except OSError as e:  # gone or changed since it was looked at
                raise error(key, f"cannot read media file {full}: {e.strerror}", line) from None
            if not info.has_video and self.transcoding:  # the decoders make pictures from pictures
                raise error(key, f"media file has no video stream: {full} (a radio channel needs transcode = false)",
                            line)
            if not info.has_audio:
                silent.add(full)
            if info.start_time:
                self.start_times[full] = info.start_time
            if info.picture is not None:
                self.pictures[full] = info.picture
            out.append(Programme(
                path=full, duration=info.duration,
                title=meta.get("title") or info.title or os.path.splitext(os.path.basename(full))[0],
                episode=meta.get("episode", info.episode), season=meta.get("season", info.season),
                description=meta.get("description", ""), category=meta.get("category", ""),
                identity=(st.st_size, st.st_mtime_ns)))
        return out

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
        # The operator's own link is followed here, once; the front, which reads the file again per
        # request, follows none (someone else may replace it with one later).
        full = os.path.realpath(os.path.join(self.base_dir(), os.path.expanduser(value)))
        try:
            head = safe_files.read_regular(full, MAX_LOGO_BYTES)[:16]
        except safe_files.UnsafeFile as e:
            raise self.error("logo", f"{full} {e.strerror}", i) from None
        except OSError as e:
            raise self.error("logo", f"cannot read the image {full}: {e.strerror}", i) from None
        if image_type(head) is None:
            raise self.error("logo", f"{full} is not a PNG, JPEG, GIF or WebP image", i)
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
                                          f"relay loop: {url_secrets.redacted(channel.source.url)} is this instance "
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
