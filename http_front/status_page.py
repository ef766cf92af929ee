"""GET / and the M3U playlists (placeholder: being written)."""


def render(front, host: str) -> bytes:
    return b"<!doctype html><title>retrovue-air</title>"


def m3u(channels, host: str) -> bytes:
    lines = ["#EXTM3U"]
    for c in channels:
        lines += [f"#EXTINF:-1,{c.config.name}", f"http://{host}/channels/{c.id}.ts"]
    return ("\n".join(lines) + "\n").encode()
