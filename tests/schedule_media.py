"""Small media files for schedule tests, each a solid colour and a tone, with its offset readable.

Every picture is one colour (told apart by its luma) below a grey strip across the top
quarter whose brightness ramps from black to white over the file, so the first decoded
frame says which item it is and how far into it (within a frame or two).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SECONDS = 4.0
STRIP_ROWS = 0.25  # the top quarter carries the ramp


@dataclass(frozen=True)
class Item:
    name: str
    luma: int  # of the body, in 16..235
    width: int = 320
    height: int = 180
    fps: int = 25
    sample_rate: int = 48000
    channels: int = 2
    tone: int = 440
    ext: str = "mp4"

    def filename(self) -> str:
        return f"{self.name}.{self.ext}"


# Different frame size, frame rate, sample rate, channel layout and container, one each.
ITEMS = (
    Item("red", 81, tone=440),
    Item("green", 145, width=256, height=144, tone=550, ext="mkv"),
    Item("blue", 41, fps=30, tone=660),
    Item("yellow", 210, sample_rate=44100, tone=770),
    Item("cyan", 170, channels=1, tone=880, ext="ts"),
)
CHROMA = {"red": (90, 240), "green": (54, 34), "blue": (240, 110), "yellow": (16, 146), "cyan": (166, 16)}


def make(item: Item, folder: Path, ffmpeg: str) -> Path:
    out = folder / item.filename()
    cb, cr = CHROMA[item.name]
    d = SECONDS
    ramp = (f"geq=lum='if(lt(Y,H*{STRIP_ROWS}),16+219*T/{d},{item.luma})'"
            f":cb='if(lt(Y,H*{STRIP_ROWS}),128,{cb})':cr='if(lt(Y,H*{STRIP_ROWS}),128,{cr})'")
    subprocess.run([ffmpeg, "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"color=c=black:s={item.width}x{item.height}:r={item.fps}:d={d},"
                                         f"format=yuv420p,{ramp}",
                    "-f", "lavfi", "-i", f"sine=frequency={item.tone}:sample_rate={item.sample_rate}:d={d}",
                    "-ac", str(item.channels), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(item.fps),
                    "-c:a", "aac", "-shortest", "-metadata", f"title={item.name.title()} Show",
                    str(out)], check=True, timeout=120)
    return out


def read_frame(gray: bytes, width: int, height: int) -> tuple[float, float]:
    """(body luma, seconds into the item) of one decoded gray frame."""
    strip = gray[width * 4: width * int(height * STRIP_ROWS - 4)]
    body = gray[width * int(height * 0.6): width * int(height * 0.9)]
    strip_luma = sum(strip) / len(strip)
    return sum(body) / len(body), (strip_luma - 16) / 219 * SECONDS


def which_item(luma: float) -> Item:
    return min(ITEMS, key=lambda item: abs(item.luma - luma))
