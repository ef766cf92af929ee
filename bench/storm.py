"""Many channels on one box: a cold-start storm, then every channel live with viewers at rate.

`storm`: N idle channels tuned in to at the same moment (one viewer each, all requests sent
before the first answer is read): request to first byte, p50/p99, and how many were refused.
Then `per_channel` more viewers join each channel and all are read for a steady window: how
many viewers got at least 95 % of their channel's rate, and the CPU of the whole service.
The channels are small test patterns unless media files are given (e.g. ingested ones).
"""

from __future__ import annotations

import selectors
import socket
import statistics
import time

import psutil

from .service import running_service

RATE_KBPS = 300 + 64


def channels_config(n: int) -> str:
    top = (f"max_active_channels = {n}\nmax_connections = 20000\nmax_connections_per_address = 20000\n"
           "start_timeout_seconds = 30\n")
    one = ('[[channel]]\nid = "c{i}"\nname = "Storm {i}"\nsource = "test-pattern"\nwidth = 160\nheight = 90\n'
           'fps = 10\nvideo_kbps = 300\naudio_kbps = 64\n')
    return top + "\n".join(one.format(i=i) for i in range(n))


def connect_all(port: int, paths: list[str]) -> dict[socket.socket, str]:
    socks = {}
    for path in paths:
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        socks[s] = path
    for s, path in socks.items():
        s.send(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    return socks


def first_bytes(socks: dict[socket.socket, str], started: float, timeout: float = 60) -> dict:
    """Read every socket until its first body byte; request to first byte for each, and refusals."""
    sel = selectors.DefaultSelector()
    heads = {s: b"" for s in socks}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    times, refused = [], 0
    deadline = time.monotonic() + timeout
    while heads and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            heads[s] += data
            head, sep, body = heads[s].partition(b"\r\n\r\n")
            if not data or (sep and not head.startswith(b"HTTP/1.1 200")):
                refused += 1
            elif not (sep and body):
                continue
            else:
                times.append(time.monotonic() - started)
            sel.unregister(s)
            del heads[s]
    sel.close()
    return {"n": len(socks), "refused_or_lost": refused + len(heads), "samples_s": times}


def cpu_of(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def run(channels: int = 50, per_channel: int = 10, seconds: float = 10.0) -> dict:
    with running_service(channels_config(channels), max_lag=4.0) as svc:
        paths = [f"/channels/c{i}.ts" for i in range(channels)]
        started = time.monotonic()
        storm_socks = connect_all(svc.port, paths)
        storm = first_bytes(storm_socks, started)
        samples = sorted(storm.pop("samples_s"))
        if samples:
            storm |= {"first_byte_p50_ms": round(1000 * statistics.median(samples)),
                      "first_byte_p99_ms": round(1000 * samples[min(len(samples) - 1, int(0.99 * len(samples)))])}
        more = connect_all(svc.port, [p for p in paths for _ in range(per_channel - 1)])
        everyone = {**storm_socks, **more}
        counts = {s: 0 for s in everyone}
        sel = selectors.DefaultSelector()
        for s in everyone:
            sel.register(s, selectors.EVENT_READ)
        buf = bytearray(262144)

        def read_for(duration: float) -> None:
            end = time.monotonic() + duration
            while (left := end - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    try:
                        n = key.fileobj.recv_into(buf)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    if not n:
                        sel.unregister(key.fileobj)
                        continue
                    counts[key.fileobj] += n

        read_for(8.0)  # past every cold-start burst: at steady state
        supervisor = psutil.Process(svc.proc.pid)
        before, cpu0, t0 = dict(counts), cpu_of(supervisor), time.monotonic()
        read_for(seconds)
        elapsed, cpu1 = time.monotonic() - t0, cpu_of(supervisor)
        rates = [(counts[s] - before[s]) * 8 / 1000 / elapsed for s in everyone]
        sel.close()
        for s in everyone:
            s.close()
    at_rate = sum(1 for r in rates if r >= 0.95 * RATE_KBPS)
    return {"channels": channels, "viewers": len(rates), "storm": storm,
            "viewers_at_95pct_rate": at_rate, "median_kbps": round(statistics.median(rates)),
            "service_cores": round((cpu1 - cpu0) / elapsed, 2),
            "cores_per_channel": round((cpu1 - cpu0) / elapsed / channels, 4)}
