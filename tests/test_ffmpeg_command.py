"""The ffmpeg argv built from a channel's config, and one real (1 s) run of it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from air_worker.ffmpeg_command import build_command, concat_list, font_file, safe_caption
from retrovue_air.config import Channel, MediaFiles
from retrovue_air.ffmpeg.binary import ffmpeg_binary, ffmpeg_version
from retrovue_air.config import TestPattern as Pattern

FFPROBE = "/usr/bin/ffprobe"


def channel(**kw) -> Channel:
    return Channel(**{"id": "1", "name": "One", "source": Pattern(440), **kw})


def value_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize("fps, keyframe_seconds, gop", [(25, 1.0, 25), (30, 2.0, 60), (10, 0.5, 5), (24, 0.01, 1)])
def test_gop_is_fps_times_keyframe_seconds(fps, keyframe_seconds, gop):
    cmd = build_command(channel(fps=fps, keyframe_seconds=keyframe_seconds), "ffmpeg")
    assert value_after(cmd, "-g") == value_after(cmd, "-keyint_min") == str(gop)


@pytest.mark.parametrize("source", [Pattern(440), MediaFiles(("/media/a.mp4",))], ids=["test-pattern", "one-file"])
def test_argv_encodes_h264_and_aac_into_mpegts_on_stdout(source):
    cmd = build_command(channel(source=source, video_kbps=900, audio_kbps=96), "/usr/bin/ffmpeg", font=None)
    assert cmd[0] == "/usr/bin/ffmpeg" and all(isinstance(a, str) for a in cmd)
    assert "sh" not in cmd and "-c" not in cmd  # no shell, no "-c copy"
    assert value_after(cmd, "-c:v") == "libx264" and value_after(cmd, "-c:a") == "aac"
    assert value_after(cmd, "-b:v") == "900k" and value_after(cmd, "-b:a") == "96k"
    output_format = len(cmd) - 1 - cmd[::-1].index("-f")  # the last -f is the output's
    assert cmd[output_format + 1] == "mpegts" and cmd[-1] == "pipe:1"


def test_test_pattern_uses_the_channel_size_rate_and_tone():
    cmd = build_command(channel(width=160, height=90, fps=10, source=Pattern(660)), "ffmpeg")
    assert "testsrc2=size=160x90:rate=10" in cmd and "sine=frequency=660:sample_rate=48000" in cmd


def test_the_channel_name_reaches_drawtext_only_as_a_safe_caption():
    cmd = build_command(channel(name="Evil': ,drawtext=text=x[0];%{pts}\\"), "ffmpeg", font="/f.ttf")
    vf = value_after(cmd, "-vf")
    assert "text=Evil drawtext text x 0 pts:x=" in vf
    assert "Evil'" not in vf and "[0]" not in vf


@pytest.mark.parametrize("text, expected", [
    ("RetroVue One", "RetroVue One"),
    ("a'b:c,d;e[f]g=h\\i%j", "a b c d e f g h i j"),
    ("Kids & Family (East) #1!", "Kids & Family (East) #1!"),
    ("Ünïcode ✓", "Ünïcode"),
    ("':,;[]=\\%", "retrovue"),
    ("x" * 100, "x" * 60),
])
def test_safe_caption_keeps_only_characters_inert_to_filtergraphs(text, expected):
    caption = safe_caption(text)
    assert caption == expected
    assert not set(caption) & set("':,;[]=\\%")


def test_concat_list_quotes_each_path_and_escapes_single_quotes():
    assert concat_list(("/m/a.ts", "/m/it's here.ts")) == \
        "ffconcat version 1.0\nfile '/m/a.ts'\nfile '/m/it'\\''s here.ts'\n"


def test_a_list_of_media_files_needs_a_playlist_path():
    two = channel(source=MediaFiles(("/m/a.ts", "/m/b.ts")))
    with pytest.raises(ValueError, match="playlist"):
        build_command(two, "ffmpeg")
    cmd = build_command(two, "ffmpeg", playlist_path="/run/p.ffconcat")
    assert value_after(cmd, "-i") == "/run/p.ffconcat" and value_after(cmd, "-safe") == "0"
    assert "/m/a.ts" not in cmd


def test_one_media_file_loops_forever_as_the_input():
    cmd = build_command(channel(source=MediaFiles(("/m/a.ts",))), "ffmpeg")
    assert value_after(cmd, "-stream_loop") == "-1" and value_after(cmd, "-i") == "/m/a.ts"


def test_transcode_off_remuxes_with_copy_and_no_encoder():
    cmd = build_command(channel(source=MediaFiles(("/m/a.ts",)), transcode=False), "ffmpeg")
    assert value_after(cmd, "-c") == "copy" and "libx264" not in cmd and "-vf" not in cmd
    assert value_after(cmd[cmd.index("-c"):], "-f") == "mpegts" and cmd[-1] == "pipe:1"


@pytest.mark.parametrize("font", [None, "font"], ids=["plain", "drawtext"])
@pytest.mark.parametrize("binary", ["PATH", "bundled"])
def test_a_real_one_second_run_produces_h264_and_aac_in_mpegts(tmp_path, font, binary):
    if font and font_file() is None:
        pytest.skip("no DejaVu font installed")
    if not os.path.exists(FFPROBE):
        pytest.skip("ffprobe is not installed")
    out = str(tmp_path / "out.ts")
    # Debian's ffmpeg (5.1) paces with -re; the bundled one (9.0) makes a cold-start burst first.
    chosen = ffmpeg_binary() if binary == "PATH" else ffmpeg_binary(cold_burst=True)
    cmd = build_command(channel(width=160, height=90, fps=10, video_kbps=200, audio_kbps=64),
                        chosen, font=font and font_file())
    assert ("-readrate_initial_burst" in cmd) == (ffmpeg_version(chosen) >= (6, 1))
    assert cmd[-1] == "pipe:1"
    cmd[-1:] = ["-t", "1", out]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    probe = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_name,codec_type,width,height",
                            "-show_entries", "format=format_name", "-of", "json", out],
                           capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(probe.stdout)
    assert info["format"]["format_name"] == "mpegts"
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == ("h264", 160, 90)
    assert streams["audio"]["codec_name"] == "aac"
