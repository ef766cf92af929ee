"""The picture keeps its shape: scaled by its display aspect ratio (pixel shape and rotation
applied) into the channel's frame, centred in black; interlaced sources deinterlaced."""

from __future__ import annotations

import json
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from harness import RawViewer, files_channel, require_tool

from air_worker.ffmpeg_command import decoder_command
from air_worker.picture import deinterlacer, fitted_size, picture_filters
from retrovue_air import media_info
from retrovue_air.config import Channel, MediaFiles
from retrovue_air.media_info import MediaInfoCache, Picture, parse_probe
from retrovue_air.schedule import Programme, Schedule

DVD_4_3 = Picture(720, 480, Fraction(8, 9), "tt")
DVD_16_9 = Picture(720, 480, Fraction(32, 27), "tt")


# --- The filter chain, from what the probe found ------------------------------------------

@pytest.mark.parametrize("picture, size", [
    (DVD_4_3, (480, 360)),  # 720 pixels of 8:9 are 640 square ones: 4:3, pillarboxed
    (DVD_16_9, (640, 360)),  # anamorphic 16:9: the whole frame
    (Picture(1920, 1080), (640, 360)),
    (Picture(640, 480), (480, 360)),
    (Picture(1080, 1920), (202, 360)),  # portrait
    (Picture(1920, 1080, rotation=270), (202, 360)),  # a phone's: stored on its side, turned by ffmpeg
    (Picture(956, 400), (640, 268)),  # 2.39:1, letterboxed
    (Picture(10000, 10), (640, 2)),
])
def test_a_picture_is_scaled_by_its_display_aspect_ratio_to_the_largest_size_that_fits(picture, size):
    assert fitted_size(picture, 640, 360) == size


def test_the_scaled_picture_is_centred_on_even_pixels():
    assert "pad=640:360:80:0" in picture_filters(DVD_4_3, 640, 360, 25)
    assert "pad=640:360:218:0" in picture_filters(Picture(1080, 1920), 640, 360, 25)
    assert "pad=640:360:0:46" in picture_filters(Picture(956, 400), 640, 360, 25)
    assert "pad" not in picture_filters(DVD_16_9, 640, 360, 25)
    assert picture_filters(DVD_4_3, 640, 360, 25).endswith("setsar=1")


@pytest.mark.parametrize("order, parity", [("tt", "tff"), ("bt", "tff"), ("bb", "bff"), ("tb", "bff")])
def test_an_interlaced_source_is_deinterlaced_whole_in_its_field_order(order, parity):
    assert deinterlacer(Picture(720, 576, field_order=order)) == f"bwdif=mode=send_frame:parity={parity}:deint=all"


def test_a_progressive_source_has_only_its_frames_flagged_interlaced_deinterlaced_and_an_unsaid_one_is_looked_at():
    flagged_only = "bwdif=mode=send_frame:parity=auto:deint=interlaced"
    assert deinterlacer(Picture(1920, 1080, field_order="progressive")) == flagged_only
    assert deinterlacer(Picture(720, 480, field_order="")) == "idet," + flagged_only


def test_deinterlacing_comes_first_then_the_channel_rate_then_scaling():
    steps = [step.split("=")[0] for step in picture_filters(DVD_4_3, 640, 360, 25).split(",")]
    assert steps == ["bwdif", "fps", "scale", "format", "pad", "setsar"]


def test_a_decoder_shapes_the_picture_its_file_was_probed_with():
    path = "/m/dvd.vob"
    source = MediaFiles((path,), Schedule((Programme(path, 20.0, "DVD"),)), pictures=((path, DVD_4_3),))
    cmd = decoder_command(Channel("tv", "TV", source), "ffmpeg", path, 0.0, 250, 480000, 5, 6)
    video_filter = cmd[cmd.index("-vf") + 1]
    assert video_filter.startswith(picture_filters(DVD_4_3, 640, 360, 25) + ",tpad=")
    unprobed = decoder_command(Channel("tv", "TV", MediaFiles((path,))), "ffmpeg", path, 0.0, 250, 480000, 5, 6)
    assert "force_original_aspect_ratio=decrease" in unprobed[unprobed.index("-vf") + 1]


# --- What the probe finds, and its cache -------------------------------------------------

def probe_output(**video) -> str:
    return json.dumps({"format": {"duration": "20.0"},
                       "streams": [{"codec_type": "video", **video}, {"codec_type": "audio"}]})


def test_the_probe_finds_the_pictures_size_pixel_shape_field_order_and_rotation():
    dvd = parse_probe(probe_output(width=720, height=480, sample_aspect_ratio="8:9", field_order="tt"))
    assert dvd.picture == DVD_4_3
    phone = parse_probe(probe_output(width=1920, height=1080, sample_aspect_ratio="1:1", field_order="progressive",
                                     side_data_list=[{"side_data_type": "Display Matrix", "rotation": -90}]))
    assert phone.picture == Picture(1920, 1080, Fraction(1), "progressive", 270)
    unsaid = parse_probe(probe_output(width=352, height=288, sample_aspect_ratio="0:1", field_order="unknown"))
    assert unsaid.picture == Picture(352, 288, Fraction(1), "")
    old_tag = parse_probe(probe_output(width=640, height=360, tags={"rotate": "90"}))
    assert old_tag.picture.rotation == 90
    radio = parse_probe(json.dumps({"format": {"duration": "9"}, "streams": [{"codec_type": "audio"}]}))
    assert radio.picture is None


def test_a_pictures_numbers_are_data_nothing_unbelievable_reaches_the_filters():
    huge = parse_probe(probe_output(width=10**9, height=480, sample_aspect_ratio="8:9", field_order="tt"))
    assert huge.picture is None  # no size believed: the channel's frame, pixels taken as square
    odd = parse_probe(probe_output(width=720, height=480, sample_aspect_ratio="1000:1", field_order="tt;x",
                                   side_data_list=[{"rotation": "90"}, "junk"], tags={"rotate": "1e9"}))
    assert odd.picture == Picture(720, 480, Fraction(1), "", 0)
    assert parse_probe(probe_output(width="720", height=480)).picture is None


def test_a_cache_entry_from_before_the_picture_was_probed_is_probed_again(tmp_path, monkeypatch):
    media = tmp_path / "a.mkv"
    media.write_bytes(b"x" * 4000)  # enough bytes to last the 20 s it is probed as
    st = media.stat()
    (tmp_path / media_info.CACHE_FILE).write_text(json.dumps(
        {str(media): {"key": [st.st_size, st.st_mtime_ns], "info": {"duration": 5.0, "has_audio": True}}}))
    probed = []
    monkeypatch.setattr(media_info, "probe", lambda path, size=None: probed.append(path) or parse_probe(
        probe_output(width=720, height=480, sample_aspect_ratio="8:9", field_order="tt")))
    cache = MediaInfoCache(str(tmp_path))
    assert cache.info(str(media)).picture == DVD_4_3 and probed == [str(media)]
    cache.save()
    assert MediaInfoCache(str(tmp_path)).info(str(media)).picture == DVD_4_3 and len(probed) == 1
    # An entry edited to say what no probe would is not believed either.
    doc = json.loads((tmp_path / media_info.CACHE_FILE).read_text())
    doc[str(media)]["info"]["sample_aspect_ratio"] = "16:18"
    (tmp_path / media_info.CACHE_FILE).write_text(json.dumps(doc))
    assert MediaInfoCache(str(tmp_path)).info(str(media)).picture == DVD_4_3 and len(probed) == 2


# --- Through a real channel -------------------------------------------------------------------

def make(ffmpeg: str, out: Path, source: str, *codec: str) -> Path:
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", source,
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:d=6", *codec, "-shortest", str(out)],
                   check=True, timeout=120)
    return out


def grey_frame(ffmpeg: str, body: bytes, width: int, height: int) -> bytes:
    """The stream's fifth picture, as luma only."""
    return subprocess.run([ffmpeg, "-v", "error", "-f", "mpegts", "-i", "-", "-vf", r"select=gte(n\,4)",
                           "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                          input=body, capture_output=True, timeout=60, check=True).stdout[:width * height]


def active_box(grey: bytes, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the picture inside its black bars: the box of the pixels
    brighter than halfway between the bars' black (16) and the picture's grey (180)."""
    lit = [i for i, luma in enumerate(grey) if luma > 100]
    assert lit, f"no picture: {len(grey)} bytes of mean luma {sum(grey) / max(1, len(grey)):.0f}"
    xs, ys = sorted(i % width for i in lit), sorted(i // width for i in lit)
    return xs[0], ys[0], xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1


def test_dvd_4_3_and_anamorphic_16_9_portrait_and_scope_pictures_keep_their_shape_on_a_channel(
        service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    grey = "color=c=0xB4B4B4:s={size}:r={rate}:d=6"
    mpeg2 = ["-c:v", "mpeg2video", "-b:v", "3M", "-c:a", "mp2", "-f", "vob"]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    phone = make(ffmpeg, tmp_path / "phone-flat.mp4", grey.format(size="640x360", rate=30), *h264)
    turned = tmp_path / "phone.mp4"  # stored as 640x360, shown turned a quarter: 360x640
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(phone), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(turned)], check=True, timeout=60)
    sources = {
        "dvd43": make(ffmpeg, tmp_path / "dvd43.vob", grey.format(size="720x480", rate="30000/1001") + ",setsar=8/9",
                      *mpeg2),
        "dvd169": make(ffmpeg, tmp_path / "dvd169.vob",
                       grey.format(size="720x480", rate="30000/1001") + ",setsar=32/27", *mpeg2),
        "phone": turned,
        "scope": make(ffmpeg, tmp_path / "scope.mp4", grey.format(size="956x400", rate=24), *h264),
    }
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"', extra="".join(
        files_channel(name, path, video_kbps=600, audio_kbps=64) for name, path in sources.items()))
    boxes = {}
    for name in sources:
        viewer = RawViewer(service, name)
        body = viewer.read_body(200_000)
        viewer.close()
        boxes[name] = active_box(grey_frame(ffmpeg, body, 640, 360), 640, 360)
    print(boxes)
    left, top, width, height = boxes["dvd43"]
    assert abs(width - 480) <= 8 and height == 360 and abs(left - 80) <= 4, boxes["dvd43"]
    assert boxes["dvd169"][2:] == (640, 360), boxes["dvd169"]
    left, top, width, height = boxes["phone"]
    assert abs(width - 202) <= 4 and height == 360 and abs(left + width / 2 - 320) <= 2, boxes["phone"]
    left, top, width, height = boxes["scope"]
    assert width == 640 and abs(height - 268) <= 4 and abs(top + height / 2 - 180) <= 2, boxes["scope"]
    service.wait_idle(timeout=10)
    assert not service.ffmpegs()


def interlaced_share(ffmpeg: str, body: bytes) -> float:
    """The share of the stream's pictures that ffmpeg's idet finds interlaced (multi-frame)."""
    said = subprocess.run([ffmpeg, "-hide_banner", "-f", "mpegts", "-i", "-", "-vf", "idet", "-f", "null", "-"],
                          input=body, capture_output=True, timeout=120, text=False).stderr.decode(errors="replace")
    m = re.search(r"Multi frame detection: TFF:\s*(\d+) BFF:\s*(\d+) Progressive:\s*(\d+) Undetermined:\s*(\d+)", said)
    assert m, said[-2000:]
    tff, bff, progressive, undetermined = map(int, m.groups())
    return (tff + bff) / max(1, tff + bff + progressive + undetermined)


def test_moving_interlaced_sources_flagged_or_not_come_out_progressive(service_factory, tmp_path):
    ffmpeg = require_tool("ffmpeg")
    # Two fields of different moments woven into each frame; at the channel's 480 lines,
    # unscaled vertically, any combing left in the output is there for idet to see.
    woven = "testsrc2=size=720x480:rate=60000/1001:d=6,tinterlace=mode=interleave_top"
    sources = {
        "flagged": make(ffmpeg, tmp_path / "flagged.vob", woven + ",setsar=8/9", "-c:v", "mpeg2video", "-b:v", "6M",
                        "-flags", "+ildct+ilme", "-top", "1", "-field_order", "tt", "-c:a", "mp2", "-f", "vob"),
        # Coded as progressive frames, in a container that says nothing of fields: as an old
        # capture of a TV broadcast to XviD is.
        "unflagged": make(ffmpeg, tmp_path / "unflagged.avi", woven, "-c:v", "mpeg4", "-q:v", "3", "-c:a", "mp2"),
    }
    service = service_factory(extra_top=f'state_dir = "{tmp_path / "state"}"', extra="".join(
        files_channel(name, path, width=720, height=480, video_kbps=1500, audio_kbps=64)
        for name, path in sources.items()))
    shares = {}
    for name in sources:
        viewer = RawViewer(service, name)
        body = viewer.read_body(1_000_000)  # about 4 s
        viewer.close()
        shares[name] = interlaced_share(ffmpeg, body)
    print(shares)
    assert all(share < 0.10 for share in shares.values()), shares
    service.wait_idle(timeout=10)
    assert not service.ffmpegs()
