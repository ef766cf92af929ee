"""make bench: run the benchmarks, print the figures, write them to bench-results/.

bench-results/<date>.json (everything, samples included), <date>.md (the tables),
<date>-viewers.png and <date>-latency.png (the plots), and report.json (the same as
<date>.json: the name earlier tools read).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from .readers import raise_fd_limit

PARTS = ("fanout", "join", "icecast", "churn", "relay", "relay_rss", "storm", "cached", "many", "guide", "config",
         "transcode")
FULL = {"viewers": [100, 1000, 5000, 10000], "seconds": 30.0, "churn_cycles": 5000}


def counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected viewer counts like 100,1000: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive viewer counts: {text!r}")
    return values


def parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--only takes some of {', '.join(PARTS)}: {text!r}")
    return chosen


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", type=parts, default=list(PARTS),
                   help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)")
    p.add_argument("--viewers", type=counts, default=[100, 1000, 5000, 10000],
                   help="viewer counts for the side-by-side with Icecast (default 100,1000,5000,10000)")
    p.add_argument("--seconds", type=float, default=10.0, help="steady measuring window per run (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per viewer count (default 2)")
    p.add_argument("--servers", type=lambda t: t.split(","), default=["ours", "icecast"],
                   help="side by side: ours,icecast (default both)")
    p.add_argument("--connect-window", type=int, default=256,
                   help="viewers the load client has joining at once (default 256)")
    p.add_argument("--fanout-viewers", type=int, default=1000, help="viewers for front vs bare loop (default 1000)")
    p.add_argument("--joins", type=int, default=30, help="warm joins per client (default 30)")
    p.add_argument("--colds", type=int, default=30, help="cold starts per client (default 30)")
    p.add_argument("--storm-channels", type=int, default=50,
                   help="idle channels tuned in to at once, then watched (default 50)")
    p.add_argument("--storm-viewers", type=int, default=10, help="viewers per channel after the storm (default 10)")
    p.add_argument("--churn-cycles", type=int, default=300, help="churn soak cycles (default 300)")
    p.add_argument("--full", action="store_true",
                   help="the issue's sizes: viewers 100,1000,5000,10000, 30 s windows, 5000 churn cycles (~1.5 h)")
    p.add_argument("--note", default="", help="said under the machine line of the table, e.g. 'shared/noisy box'")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    args = p.parse_args()
    if args.full:
        for key, value in FULL.items():
            setattr(args, key, value)
    unknown = [s for s in args.servers if s not in ("ours", "icecast")]
    if unknown:
        p.error(f"--servers takes ours and/or icecast, not {', '.join(unknown)}")
    return args


def show(name: str, result: dict) -> None:
    shown = json.loads(json.dumps(result))  # a copy without the raw samples, which are long
    for part in [shown, *[v for v in shown.values() if isinstance(v, dict)], *shown.get("runs", [])]:
        for key in [k for k in part if "samples" in k]:
            del part[key]
    print(f"{name}:", json.dumps(shown.get("summary", shown), indent=1), flush=True)


def main() -> None:
    args = arguments()
    raise_fd_limit()
    now = time.gmtime()
    report = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", now), "machine": platform.platform(),
              "cpus": os.cpu_count(), "note": args.note, "arguments": vars(args) | {"out": str(args.out)}}
    try:
        run_parts(args, report)
    finally:
        # Whatever was measured is written, even when a later part fails or is interrupted.
        write(report, args.out, time.strftime("%Y-%m-%d-%H%M", now))


def run_parts(args: argparse.Namespace, report: dict) -> None:
    if "fanout" in args.only:
        from . import fanout
        report["fanout"] = fanout.run(args.fanout_viewers, args.seconds, args.rounds)
        show("fanout", report["fanout"])
    if "join" in args.only:
        from . import join
        report["join"] = join.run(args.joins, args.colds)
        show("join", report["join"])
    if "icecast" in args.only:
        from . import side_by_side
        if "icecast" in args.servers and not shutil.which("icecast2"):
            print("icecast2 is not installed (make bench installs it when root): our service alone")
            args.servers = [s for s in args.servers if s != "icecast"]
        print(f"side by side, viewers {args.viewers}, {args.rounds} rounds of {args.seconds:g} s:", flush=True)
        report["side_by_side"] = side_by_side.run(args.viewers, args.seconds, args.rounds, args.servers,
                                                  args.connect_window, log=lambda m: print(m, flush=True))
        show("side by side", report["side_by_side"])
    if "churn" in args.only:
        from . import churn
        report["churn"] = churn.run(args.churn_cycles)
        show("churn", report["churn"])
    if "storm" in args.only:
        from . import storm
        report["storm"] = storm.run(args.storm_channels, args.storm_viewers, args.seconds)
        show("storm", report["storm"])
    if "cached" in args.only:
        from . import cached_channel_cpu
        report["cached_channel_cpu"] = cached_channel_cpu.run(args.seconds)
        show("one channel, transcoded live vs from the ingest cache", report["cached_channel_cpu"])
    if "many" in args.only:
        from . import many_channels
        report["many_channels"] = many_channels.run(100, 10, 50, args.seconds)
        show("100 channels from the cache, 10 viewers each; a 50-channel cold-start storm", report["many_channels"])
    if "guide" in args.only:
        from . import guide
        report["guide"] = guide.run()
        show("/xmltv.xml of 50 channels x 336 hours, 6 requests at once, beside a viewer", report["guide"])
    if "transcode" in args.only:
        from . import transcode_cpu
        report["transcode_cpu"] = transcode_cpu.run(max(args.seconds, 20.0))
        show("one channel transcoding live: decoder + encoder, DVD and 1080p", report["transcode_cpu"])
    if "relay" in args.only:
        from . import relay
        report["relay"] = relay.run(min(max(args.viewers), 400), min(args.seconds, 10.0))
        show("relay", report["relay"])
    if "relay_rss" in args.only:
        from . import relay_rss
        report["relay_rss"] = relay_rss.run(args.seconds)
        show("relays of an origin faster than real time", report["relay_rss"])
    if "config" in args.only:
        from . import config_check
        report["config_check"] = config_check.run()
        show("--check-config of a large library, probes cached", report["config_check"])


def write(report: dict, out: Path, date: str) -> None:
    from . import report as render

    out.mkdir(exist_ok=True)
    text = json.dumps(report, indent=1) + "\n"
    (out / f"{date}.json").write_text(text)
    (out / "report.json").write_text(text)
    (out / f"{date}.md").write_text(render.markdown(report) + "\n")
    written = [out / f"{date}.json", out / f"{date}.md"]
    try:
        written += render.plots(report, out / date)
    except ImportError:
        print("no plots: matplotlib is missing (make bench installs the bench extra)")
    print("written:", *written, sep="\n  ")


main()
