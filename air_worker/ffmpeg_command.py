"""The ffmpeg argument list for a channel, built from validated config only.

No shell is involved anywhere: each value is one argv element. The only free text
that reaches ffmpeg (the channel's display name, burned into the test pattern) is
reduced to characters that mean nothing to ffmpeg's filtergraph parser.
"""

from __future__ import annotations

import os
import sys
import time

from retrovue_air.config import Channel, MediaFiles, Relay, TestPattern
from retrovue_air.ffmpeg.binary import ffmpeg_options, ffmpeg_version
from retrovue_air.ffmpeg.profile import AUDIO_RATE, MPEGTS_OUTPUT, SLATE_ENCODERS, encode_arguments
from retrovue_air.house_format import house_format
from retrovue_air.schedule import Airing, file_passes

from .slots import Piece

from .picture import picture_filters

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)


def cold_burst_seconds(channel: Channel) -> float:
    """How much stream a new ffmpeg makes at once before it settles to real time: the join burst,
    so that the first viewer of an idle channel gets what a late joiner gets (keyframe joins only).
    A remuxing relay passes on the origin's burst to it (relay_ahead_seconds); http_pull runs no ffmpeg."""
    if isinstance(channel.source, Relay):
        return relay_ahead_seconds(channel) if channel.source.remux else 0.0
    if channel.join != "keyframe":
        return 0.0
    return channel.join_burst_seconds


# An origin's joiner burst starts at a keyframe up to one GOP (keyframe_seconds, at most 2 s)
# before its join_burst_seconds: that much more may pass at once.
ORIGIN_GOP_SECONDS = 2.0


def relay_ahead_seconds(channel: Channel) -> float:
    """How far ahead of real time a relay's stream may run: the burst that the origin gives a new
    viewer (this relay's pull), which is this channel's first viewer's cold start, and a GOP more."""
    burst = channel.join_burst_seconds if channel.join == "keyframe" else 0.0
    return burst + ORIGIN_GOP_SECONDS


def pacing(channel: Channel, binary: str) -> list[str]:
    """Input options that make an input real time: -re, or real time after a burst (ffmpeg 6.1+)."""
    burst = cold_burst_seconds(channel)
    if burst and ffmpeg_version(binary) >= (6, 1):
        return ["-readrate", "1", "-readrate_initial_burst", f"{burst:g}"]
    return ["-re"]


def font_file() -> str | None:
    return next((f for f in FONT_CANDIDATES if os.path.isfile(f)), None)


def safe_caption(text: str) -> str:
    # : , ; [ ] = ' \ and % are all syntax to the filtergraph or to drawtext's expansion.
    kept = "".join(c if c.isalnum() or c in " -_.!?#&()+" else " " for c in text)
    return " ".join(kept.split())[:60] or "retrovue"


def concat_list(paths: tuple[str, ...]) -> str:
    """A concat-demuxer playlist: one `file` line per path, quoted as that format wants."""
    return "ffconcat version 1.0\n" + "".join(
        "file '" + p.replace("'", "'\\''") + "'\n" for p in paths)


def airing_list(airings: list[Airing], start_times: dict[str, float] | None = None) -> str:
    """A concat-demuxer playlist of airings, each cut to its place on the wall clock."""
    return remux_list([Piece(a, a.start, a.end, a.inpoint) for a in airings], start_times)


def remux_list(pieces: list[Piece], start_times: dict[str, float] | None = None,
               slates: dict[str, SlateClip] | None = None) -> str:
    """A concat-demuxer playlist of the pieces of airings: each file cut to its place on the
    wall clock, each slate (by programme title, else the untitled one under "") listed as
    often as its gap needs.

    The concat demuxer reads inpoint and outpoint as the file's own timestamps, so a file
    that starts at 1.4 s (MPEG-TS usually does) has that added. A slate without a clip
    adds its length to the entry before: the next one keeps its time, the gap stays silent.
    """
    out = ["ffconcat version 1.0\n"]

    def entry(path: str, first: float, inpoint: float, length: float) -> None:
        out.append("file '" + path.replace("'", "'\\''") + "'\n")
        if inpoint > 0:
            out.append(f"inpoint {first + inpoint:.6f}\n")
        out.append(f"outpoint {first + inpoint + length:.6f}\n")
        out.append(f"duration {length:.6f}\n")

    for piece in pieces:
        length = piece.end - piece.start
        if piece.slate is None:
            programme = piece.airing.programme
            first = (start_times or {}).get(programme.path, 0.0)
            for start, end, inpoint in file_passes(programme, piece.start, piece.end, piece.inpoint):
                entry(programme.path, first, inpoint, end - start)
            continue
        clip = (slates or {}).get(piece.airing.programme.title) or (slates or {}).get("")
        if clip is None:
            if len(out) > 1:
                last = float(out[-1].split()[1])
                out[-1] = f"duration {last + length:.6f}\n"
            continue
        while length > 1e-6:
            part = min(length, clip.seconds)
            entry(clip.path, clip.start_time, 0.0, part)
            length -= part
    return "".join(out)


def build_command(channel: Channel, binary: str, playlist_path: str | None = None, font: str | None = None,
                  started_at: float | None = None, url_file: str | None = None) -> list[str]:
    """The command line; for a relay pulled by http_pull, url_file (/dev/fd/N) holds its URL,
    which then stays off the command line: every local user can read that (ps), and the URL may
    carry a password or a token."""
    cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    if isinstance(channel.source, Relay):
        if not channel.source.remux:
            # Already the TS the front wants: its bytes are passed on (air_worker/http_pull.py),
            # at the stream's own rate.
            pull = [sys.executable, "-m", "air_worker.http_pull", "--ahead", f"{relay_ahead_seconds(channel):g}"]
            if channel.source.follow_redirects:
                pull.append("--follow-redirects")
            return pull + (["--url-from", url_file] if url_file else [channel.source.url])
        pace = pacing(channel, binary)
        if pace[0] == "-readrate" and "-readrate_catchup" in ffmpeg_options(binary):
            # Where ffmpeg has this option, an input that fell behind its rate (a network stall)
            # catches up at only 1.05 times it by default: the origin would drop us as a slow
            # viewer long before. Never past the burst's allowance, however fast. (Older ones
            # catch up at once.)
            pace += ["-readrate_catchup", "10"]
        return cmd + pace + relay_arguments(channel.source)
    size = f"{channel.width}x{channel.height}"
    source = channel.source
    if isinstance(source, TestPattern):
        pace = pacing(channel, binary)
        cmd += [*pace, "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={channel.fps}",
                *pace, "-f", "lavfi", "-i", f"sine=frequency={source.tone_hz}:sample_rate={AUDIO_RATE}"]
        video_filter = "format=yuv420p"
        if font:
            caption = safe_caption(channel.name)
            # The clock is the frame's time (start + pts), not the time ffmpeg drew it: after a
            # cold-start burst the encoder runs ahead of the viewer, who sees each frame on time.
            started = int(time.time() if started_at is None else started_at)
            video_filter += (
                f",drawtext=fontfile={font}:text={caption}:x=w-tw-24:y=24:fontsize=h/12"
                ":fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8:expansion=none"
                f",drawtext=fontfile={font}:text='%{{pts\\:localtime\\:{started}\\:%X}}':x=24:y=h-th-24"
                ":fontsize=h/10:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8")
        cmd += ["-map", "0:v", "-map", "1:a"]
    elif isinstance(source, MediaFiles):
        if source.schedule is not None:
            # Scheduled and not transcoded (transcoded ones use encoder_command): a playlist
            # of airings, each cut to its place; it starts at most one GOP before the inpoint.
            if playlist_path is None:
                raise ValueError("a scheduled channel needs a playlist file")
            cmd += [*pacing(channel, binary), "-f", "concat", "-safe", "0", "-i", playlist_path]
        elif len(source.paths) == 1:
            cmd += [*pacing(channel, binary), "-stream_loop", "-1", "-i", source.paths[0]]
        else:
            if playlist_path is None:
                raise ValueError("a list of media files needs a playlist file")
            cmd += [*pacing(channel, binary), "-stream_loop", "-1", "-f", "concat", "-safe", "0", "-i", playlist_path]
        # Files of different sizes and rates must become one steady stream.
        video_filter = (f"scale={channel.width}:{channel.height}:force_original_aspect_ratio=decrease,"
                        f"pad={channel.width}:{channel.height}:(ow-iw)/2:(oh-ih)/2,"
                        f"fps={channel.fps},format=yuv420p")
        cmd += ["-map", "0:v:0", "-map", "0:a:0?", "-af", "aresample=async=1"]
    else:
        raise TypeError(f"unknown source {source!r}")
    if not channel.transcode:
        # Already H.264 + AAC: remux only. Its keyframes are wherever the source put them.
        return cmd[: cmd.index("-map")] + ["-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy",
                                             "-f", "mpegts", "pipe:1"]
    return cmd + ["-vf", video_filter, *encode_arguments(house_format(channel)), *MPEGTS_OUTPUT, "pipe:1"]


# How long a relay's ffmpeg waits on a silent origin before it counts the connection as
# dead and reconnects (a cut cable sends no FIN).
RELAY_STALL_SECONDS = 5
# ffmpeg's own reconnects after an origin went away: after 0, 1 and 2 s; then it exits
# and the worker restarts it with its backoff (see AirWorker.relay_gives_up).
RELAY_RECONNECT_DELAY_MAX = 2
MAX_REDIRECTS = 5  # as http_pull's


def relay_arguments(source: Relay) -> list[str]:
    """Pull a stream and remux it (remux = true): no decoding, no encoding.

    For a source that is not clean MPEG-TS over HTTP (HLS, broken timestamps); it costs
    a cold join about 1.3 s of probing and muxer start-up that http_pull does not.

    Paced as http_pull paces (build_command puts -readrate first): an origin that does not
    pace its stream is read in real time, after the burst that the origin sends a joiner.
    """
    return [
        "-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_at_eof", "1",
        "-reconnect_on_network_error", "1", "-reconnect_delay_max", str(RELAY_RECONNECT_DELAY_MAX),
        "-rw_timeout", str(RELAY_STALL_SECONDS * 1_000_000),
        "-user_agent", "retrovue-air relay",
        # A redirect may point inside our own network: followed only when the channel says so.
        "-max_redirects", str(MAX_REDIRECTS if source.follow_redirects else 0),
        # ffmpeg's default probing reads 5 s of a live stream before its first output
        # byte; -c copy needs only the codecs, which the origin's PMT and first GOP give.
        "-probesize", "65536", "-analyzeduration", "500000", "-fflags", "nobuffer",
        "-i", source.url,
        "-map", "0:v?", "-map", "0:a?", "-c", "copy",
        *MPEGTS_OUTPUT, "pipe:1",
    ]


# --- Scheduled media: one decoder ffmpeg per airing, one long-lived encoder ----------------
#
# The concat demuxer cannot splice real files: it takes the first file's time base for
# all of them (an mp4 after an mkv got timestamps 88 s off, and ffmpeg stalled that long),
# and it cannot follow a change of codec. So each airing is decoded by its own ffmpeg into
# raw, uniform frames (one size, one rate, yuv420p; 48 kHz s16 stereo) written to two pipes
# the worker holds open, and one encoder reads them for the stream's whole life. Raw
# frames concatenate perfectly: the encoder sees one endless input whose timestamps are
# frame and sample counts, so its TS never jumps.

# The encoder's queues are the slack that hides the next decoder's start-up (about 0.2 s).
VIDEO_QUEUE_FRAMES = 48
AUDIO_QUEUE_PACKETS = 1024  # the s16le demuxer's packets are 1024 samples: about 21 s


def encoder_command(channel: Channel, binary: str, video_fd: int, audio_fd: int) -> list[str]:
    """The channel's encoder, reading raw frames from two pipes, paced in real time (after a
    cold-start burst, when the binary can: the decoders feeding it are not paced)."""
    pace = pacing(channel, binary)
    return [
        binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
        # No probing: the format is known, and probing would read ahead in a pipe.
        "-probesize", "32", "-analyzeduration", "0",
        *pace, "-thread_queue_size", str(VIDEO_QUEUE_FRAMES), "-f", "rawvideo", "-pix_fmt", "yuv420p",
        "-video_size", f"{channel.width}x{channel.height}", "-framerate", str(channel.fps),
        "-i", f"pipe:{video_fd}",
        "-probesize", "32", "-analyzeduration", "0",
        *pace, "-thread_queue_size", str(AUDIO_QUEUE_PACKETS), "-f", "s16le", "-ar", str(AUDIO_RATE),
        "-ac", "2", "-i", f"pipe:{audio_fd}",
        "-map", "0:v", "-map", "1:a",
        *encode_arguments(house_format(channel)), *MPEGTS_OUTPUT,
        "pipe:1",
    ]


def decoder_command(channel: Channel, binary: str, path: str, inpoint: float, frames: int, samples: int,
                    video_fd: int, audio_fd: int, has_audio: bool = True, passes: int = 1) -> list[str]:
    """One airing as exactly `frames` raw pictures and `samples` raw stereo samples.

    Exact counts keep picture and sound together across any number of airings: a file
    whose audio is shorter is padded with silence, a last picture is held. A file shorter
    than its slot is read `passes` times over (the first from `inpoint`).

    The file is opened twice, one demuxer for its picture and one for its sound, each at
    its own place in the file. With one demuxer ffmpeg writes the two pipes in the file's
    order: an MPEG-PS (a DVD's .vob, a broadcast .mpg) may hold a picture seconds before the
    sound of the same moment, and the encoder, which reads both in step, stops taking
    pictures; the decoder then blocked on a full video pipe, never reaching the sound the
    encoder waited for. With two demuxers ffmpeg feeds whichever output is behind from its
    own input, so both pipes fill in timestamp order whatever the interleaving.
    """
    cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    # Input options, given to both inputs alike. A bounded loop, not -1: a file whose counts
    # could never be reached (an audio stream without a packet) then ends and fails, where an
    # endless input would hang its channel. -ss before -i and decoding: ffmpeg seeks to the
    # keyframe before, then drops decoded frames up to the inpoint, so the first picture is
    # the right one; on both, or the sound would start at the file's beginning.
    reading = ["-stream_loop", str(passes - 1)] if passes > 1 else []
    if inpoint > 0:
        reading += ["-ss", f"{inpoint:.3f}"]
    cmd += [*reading, "-i", path]
    if has_audio:
        cmd += [*reading, "-i", path]
    else:
        cmd += ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo"]
    picture = dict(channel.source.pictures).get(path) if isinstance(channel.source, MediaFiles) else None
    cmd += [
        "-map", "0:v:0",
        "-vf", (picture_filters(picture, channel.width, channel.height, channel.fps)
                + f",tpad=stop=-1:stop_mode=clone,trim=end_frame={frames}"),
        # Frames as the filters made them: ffmpeg would otherwise duplicate some to fill
        # the gap between 0 and a seeked file's first timestamp.
        "-fps_mode", "passthrough",
        "-f", "rawvideo", f"pipe:{video_fd}",
        "-map", "1:a:0",
        # Samples placed by their timestamps, as the fps filter places pictures: sound that
        # starts late (a seek that lands past the first audio, a gap in a broadcast recording)
        # is preceded by silence instead of pulling the rest early.
        "-af", (f"aresample={AUDIO_RATE}:async=1:first_pts=0,"
                f"aformat=sample_fmts=s16:channel_layouts=stereo,apad,atrim=end_sample={samples}"),
        "-f", "s16le", f"pipe:{audio_fd}",
    ]
    return cmd


def slate_picture(name: str, title: str, size: str, rate: str, font: str | None) -> str:
    """The slate's picture as a lavfi source: the channel's name, the programme's title and
    "back shortly", white on black."""
    video = f"color=c=black:s={size}:r={rate}"
    if font:
        # Text in the upper half: the picture's lower part stays black, a slate at a glance.
        lines = ((safe_caption(name), "h/10", "h*0.22"), (safe_caption(title) if title else "", "h/14", "h*0.36"),
                 ("back shortly", "h/14", "h*0.46"))
        for text, points, y in (line for line in lines if line[0]):
            video += (f",drawtext=fontfile={font}:text={text}:fontsize={points}:fontcolor=white"
                      f":x=(w-tw)/2:y={y}:expansion=none")
    return video


def slate_command(channel: Channel, binary: str, title: str, frames: int, samples: int,
                  video_fd: int, audio_fd: int, font: str | None) -> list[str]:
    """What covers an airing that cannot play, as exactly `frames` raw pictures and `samples`
    of silence, like a decoder's."""
    picture = slate_picture(channel.name, title, f"{channel.width}x{channel.height}", str(channel.fps), font)
    return [
        binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
        "-f", "lavfi", "-i", f"{picture},format=yuv420p,trim=end_frame={frames}",
        "-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo,atrim=end_sample={samples}",
        "-map", "0:v", "-fps_mode", "passthrough", "-f", "rawvideo", f"pipe:{video_fd}",
        "-map", "1:a", "-c:a", "pcm_s16le", "-f", "s16le", f"pipe:{audio_fd}",
    ]


def slate_clip_command(channel: Channel, binary: str, title: str, fmt, seconds: float,
                       font: str | None) -> list[str] | None:
    """The slate as an MPEG-TS clip in a remuxed channel's format (air_worker.remux_slate), on
    stdout; None for a codec we cannot encode."""
    cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    if fmt.video:
        codec, width, height, rate, pix_fmt = fmt.video
        if codec not in SLATE_ENCODERS:
            return None
        picture = slate_picture(channel.name, title, f"{width}x{height}", rate, font)
        cmd += ["-f", "lavfi", "-i", f"{picture},format={pix_fmt}"]
    if fmt.audio:
        codec, rate, channels = fmt.audio
        if codec not in SLATE_ENCODERS:
            return None
        cmd += ["-f", "lavfi", "-i", f"anullsrc=r={rate}:cl={'mono' if channels == 1 else 'stereo'}"]
    if fmt.video:
        # A keyframe every second, whatever the rate.
        cmd += ["-map", "0:v", "-c:v", *SLATE_ENCODERS[fmt.video[0]], "-force_key_frames", "expr:gte(t,n_forced)"]
    if fmt.audio:
        cmd += ["-map", f"{1 if fmt.video else 0}:a", "-c:a", *SLATE_ENCODERS[fmt.audio[0]],
                "-ac", str(fmt.audio[2])]
    return cmd + ["-t", f"{seconds:.3f}", *MPEGTS_OUTPUT, "pipe:1"]
