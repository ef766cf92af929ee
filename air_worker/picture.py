"""The decoder's picture filters: any source made into the channel's frame with its shape kept.

Pure: built from what the probe found (media_info.Picture) and the channel's size and rate.
A picture is scaled by its display aspect ratio, pixel shape and rotation applied (a 4:3 DVD's
720x480 pixels are 8:9, narrower than they are tall), to the largest size that fits the
frame, and centred in black: letterboxed, pillarboxed, or both for a portrait source.
Interlaced video is deinterlaced first, at its own size, while its fields are still whole.
"""

from __future__ import annotations

from fractions import Fraction

from retrovue_air.media_info import Picture

# bwdif's parity is the field shown first; ffprobe's two letters are the field coded first, then shown first.
TOP_FIELD_SHOWN_FIRST = {"tt": True, "bt": True, "bb": False, "tb": False}


def even(x: Fraction | float, limit: int) -> int:
    """x rounded to an even number of pixels (4:2:0 chroma and x264 need them), 2..limit."""
    return max(2, min(limit, 2 * round(x / 2)))


def fitted_size(picture: Picture, width: int, height: int) -> tuple[int, int]:
    """The size the picture is scaled to inside a width x height frame of square pixels."""
    aspect = picture.display_aspect
    if aspect >= Fraction(width, height):
        return width, even(width / aspect, height)
    return even(height * aspect, width), height


def deinterlacer(picture: Picture) -> str:
    """The filters that make the source's pictures progressive: one output frame per input frame
    (the channel's fps filter picks among them), so the cost is one bwdif pass per frame.

    Interlaced by the probe: every frame, in the probed field order, whatever single frames say.
    Progressive by the probe: only frames flagged interlaced (a container may call progressive
    what its codec codes as fields); bwdif passes the others on untouched, at no cost.
    Not said: idet looks at each frame and flags what it finds combed, and bwdif takes those."""
    if picture.interlaced:
        parity = "tff" if TOP_FIELD_SHOWN_FIRST[picture.field_order] else "bff"
        return f"bwdif=mode=send_frame:parity={parity}:deint=all"
    flagged_only = "bwdif=mode=send_frame:parity=auto:deint=interlaced"
    return flagged_only if picture.field_order == "progressive" else "idet," + flagged_only


def picture_filters(picture: Picture | None, width: int, height: int, fps: int) -> str:
    """The filter chain from a decoded source picture to the channel's frame: deinterlaced, at
    the channel's rate (before scaling, so dropped frames are never scaled), scaled, centred."""
    if picture is None:  # never probed (a channel built by hand): its pixels taken as square
        return (f"fps={fps},scale={width}:{height}:force_original_aspect_ratio=decrease,format=yuv420p,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1")
    w, h = fitted_size(picture, width, height)
    chain = [deinterlacer(picture), f"fps={fps}", f"scale={w}:{h}", "format=yuv420p"]
    if (w, h) != (width, height):
        # Even offsets: an odd one would shift the chroma half a pixel from the luma.
        chain.append(f"pad={width}:{height}:{(width - w) // 4 * 2}:{(height - h) // 4 * 2}")
    chain.append("setsar=1")
    return ",".join(chain)
