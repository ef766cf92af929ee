"""GET /metrics (placeholder: being written)."""


def render(front) -> tuple[str, bytes]:
    return "text/plain; version=0.0.4; charset=utf-8", b""
