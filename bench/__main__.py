"""make bench: run every benchmark, print the figures, write bench-results/report.json."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from . import fanout
from .readers import raise_fd_limit


def main() -> None:
    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("--viewers", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--only", choices=["fanout", "join", "relay"], default=None)
    args = p.parse_args()
    raise_fd_limit()
    report = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(),
              "cpus": __import__("os").cpu_count()}
    if args.only in (None, "fanout"):
        report["fanout"] = fanout.run(args.viewers, args.seconds)
        print(json.dumps(report["fanout"], indent=1), flush=True)
    if args.only in (None, "join"):
        from . import join
        report["join"] = join.run()
        print(json.dumps(report["join"], indent=1), flush=True)
    if args.only in (None, "relay"):
        from . import relay
        report["relay"] = relay.run(min(args.viewers, 400), min(args.seconds, 10.0))
        print(json.dumps(report["relay"], indent=1), flush=True)
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {out / 'report.json'}")


main()
