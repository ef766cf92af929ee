"""What a bench run wrote: the markdown table (pure: report dict in, text out) and the PNG plots."""

from __future__ import annotations

from pathlib import Path

SERVER_NAMES = {"retrovue-air": "retrovue-air (front)", "icecast2": "Icecast 2"}


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    out = [f"# Bench {report['when']}", "",
           f"Machine: {report['machine']}, {report['cpus']} CPUs. {report.get('note', '')}".rstrip(), ""]
    sbs = report.get("side_by_side")
    if sbs:
        out += [f"## Side by side: one {sbs['channel_kbps']} kbit/s test-pattern channel, "
                f"{sbs['seconds']:g} s windows, {sbs['rounds']} interleaved rounds (medians; losses: worst round)", "",
                table(["server", "viewers", "CPU-s/GB", "cores", "RSS MB", "below 95 %", "dropped",
                       "listen overflows", "first byte p50 ms", "first byte p99 ms", "source kbit/s",
                       "median viewer kbit/s", "holds"],
                      [[SERVER_NAMES.get(r["server"], r["server"]), r["viewers"], r["cpu_s_per_gb"],
                        r["cpu_cores"], r["rss_mb"], r["below_95pct"], r["dropped"], r["listen_overflows"],
                        r["first_media_p50_ms"], r["first_media_p99_ms"], r.get("source_kbps"),
                        r.get("viewer_rate_median_kbps"), r["holds"]]
                       for r in sbs["summary"]]), ""]
        icecast_run = next((r for r in sbs["runs"] if r["server"] == "icecast2"), None)
        if icecast_run:
            lim = icecast_run["limits"]
            out += [f"Icecast 2 limits: `<clients>` N + 100, `<sources>` {lim['sources']}, `<queue-size>` "
                    f"{lim['queue_size']} bytes (our max lag), `<burst-size>` {lim['burst_size']}; listen backlog "
                    f"{icecast_run['listen_backlog']} (Icecast hard-codes 5: raised by an LD_PRELOAD shim "
                    "when a C compiler is there). One source thread serves every listener of a mount.", ""]
        for e in sbs.get("errors", []):
            out += [f"Failed: {e['server']} at {e['viewers']} viewers, round {e['round']}: `{e['error']}`", ""]
        if sbs.get("icecast_stopped_holding_at"):
            out += [f"Icecast stopped holding at {sbs['icecast_stopped_holding_at']} viewers: "
                    "not run at larger N.", ""]
    fan = report.get("fanout")
    if fan:
        rounds = fan["rounds"]
        rows = []
        for i, (f, b) in enumerate(zip(rounds["front"], rounds["bare_python_loop_64k"]), 1):
            rows += [[i, "front", f["viewers"], f["front_s_per_gb"], f.get("front_user_s_per_gb", "")],
                     [i, "bare loop", b["viewers"], b["s_per_gb"], b.get("user_s_per_gb", "")]]
        out += ["## Front against a bare Python 64 KiB send loop (interleaved rounds)", "",
                table(["round", "", "viewers", "CPU-s/GB", "of which user"], rows),
                "", f"Ratio front / bare loop (means): {fan['ratio_front_to_bare']}", ""]
    join = report.get("join")
    if join:
        out += ["## Tune-in latency (a fresh client process, until it has what it waits for)", "",
                f"Every keyframe joiner starts {join.get('burst_behind_live_edge_s', 0):g} s behind the live edge "
                "(join_burst_seconds).", "",
                table(["", "n", "p50 ms", "p99 ms", "max ms"],
                      [[k, v["n"], v["p50_ms"], v["p99_ms"], v["max_ms"]] for k, v in join.items()
                       if isinstance(v, dict) and "p50_ms" in v]), ""]
    storm = report.get("storm")
    if storm:
        st = storm["storm"]
        out += [f"## Many channels: {storm['channels']} idle channels tuned in at once, then "
                f"{storm['viewers']} viewers", "",
                table(["cold-start storm: first byte p50 ms", "p99 ms", "refused or lost", "viewers at 95 % of rate",
                       "service cores", "cores per channel"],
                      [[st.get("first_byte_p50_ms"), st.get("first_byte_p99_ms"), st["refused_or_lost"],
                        f"{storm['viewers_at_95pct_rate']} of {storm['viewers']}", storm["service_cores"],
                        storm["cores_per_channel"]]]), ""]
    guide = report.get("guide")
    if guide:
        out += [f"## The guide: {guide['channels']} channels x {guide['guide_hours']} hours, "
                f"{guide['concurrent_requests']} requests at once beside a viewer of another channel", "",
                table(["programmes", "MB", "made for all in s", "front CPU s", "next request s",
                       "viewer's longest pause s"],
                      [[guide["programmes"], guide["mb"], guide["made_for_all_s"], guide["front_cpu_s"],
                        guide["kept_s"], guide["viewer_longest_pause_s"]]]), ""]
    churn = report.get("churn")
    if churn:
        f, s, e = churn.get("fresh"), churn["start"], churn["end"]
        rows = [[f"fresh (before {churn.get('warm_up_cycles')} warm-up cycles)", f["processes"], f["fds"], f["rss_mb"]]] if f else []
        rows += [["start", s["processes"], s["fds"], s["rss_mb"]]]
        rows += [[f"after cycle {t['cycle']}", t["processes"], t["fds"], t["rss_mb"]] for t in churn.get("trace", [])]
        rows += [["end", e["processes"], e["fds"], e["rss_mb"]]]
        out += [f"## Churn soak: {churn['cycles']} cycles of tune in, read, leave ({churn['seconds']:g} s)", "",
                table(["", "processes", "fds", "RSS MB"], rows),
                "",
                table(["", "p50 ms", "p99 ms", "max ms"],
                      [[name, churn[k]["p50_ms"], churn[k]["p99_ms"], churn[k]["max_ms"]]
                       for name, k in (("first packet (cold start)", "first_packet"),
                                       ("teardown: leave → ffmpeg exited", "teardown_ffmpeg_exited"),
                                       ("teardown: leave → worker reaped", "teardown_worker_reaped"))]),
                "", f"Front's own teardown histogram (STOP sent → worker exit): "
                    f"{churn['teardown_front_histogram']['n']} samples, mean "
                    f"{churn['teardown_front_histogram']['mean_ms']} ms. Stuck cycles: {churn['stuck']}.", ""]
    live = report.get("transcode_cpu")
    if live:
        out += [f"## One channel transcoding live ({live['channel_format']}): its decoder and encoder, "
                "CPU-s per second of stream", "",
                table(["source", "cores", "decoder", "encoder"],
                      [[r["source"], r["cores"], r["decoder_cores"], r["encoder_cores"]]
                       for r in live["cores_per_channel"].values()]), ""]
    fast = report.get("relay_rss")
    if fast and "error" not in fast:
        out += [f"## {fast['channels']} relays of an origin faster than real time ({fast['origin']}), "
                f"one viewer each, {fast['seconds']:g} s", "",
                table(["front RSS idle MB", "peak MB", "end MB", "each viewer: s of stream", "real time after 3 s",
                       "dropped"],
                      [[fast["front_rss_idle_mb"], fast["front_rss_peak_mb"], fast["front_rss_end_mb"],
                        " / ".join(map(str, fast["viewer_stream_seconds"])),
                        " / ".join(map(str, fast["viewer_real_time_after_3s"])), fast["viewers_dropped"]]]), ""]
    check = report.get("config_check")
    if check:
        out += [f"## `--check-config` of a large library, probes cached (median of {check['rounds']}; "
                f"{check['startup_s']:g} s of it is starting Python and importing)", "",
                table(["file entries", "channels", "seconds (median)", "seconds (max)"],
                      [[r["files"], r["channels"], r["check_config_s_median"], r["check_config_s_max"]]
                       for r in check["summary"]]), ""]
    return "\n".join(out)


def plots(report: dict, stem: Path) -> list[Path]:
    """PNG plots next to the report: cost and memory against viewers, latency distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sbs = report.get("side_by_side")
    if sbs and sbs["summary"]:
        fig, (cost, rss) = plt.subplots(1, 2, figsize=(11, 4.2))
        for server in dict.fromkeys(r["server"] for r in sbs["summary"]):
            rows = [r for r in sbs["summary"] if r["server"] == server]
            n = [r["viewers"] for r in rows]
            cost.plot(n, [r["cpu_s_per_gb"] for r in rows], "o-", label=SERVER_NAMES.get(server, server))
            rss.plot(n, [r["rss_mb"] for r in rows], "o-", label=SERVER_NAMES.get(server, server))
        fan = report.get("fanout")
        if fan:
            cost.plot([fan["rounds"]["bare_python_loop_64k"][0]["viewers"]], [fan["mean_s_per_gb"]["bare_python_loop_64k"]],
                      "k^", label="bare Python 64 KiB send loop")
        for ax, title, unit in ((cost, "server CPU per GB delivered", "CPU-s/GB"), (rss, "server RSS", "MB")):
            ax.set_xscale("log")
            ax.set_xlabel("viewers")
            ax.set_ylabel(unit)
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            ax.legend()
            ax.set_ylim(bottom=0)
        fig.suptitle(f"{report['when']} — {report['machine']}", fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, stem, "viewers"))

    cached, many = report.get("cached_channel_cpu"), report.get("many_channels")
    if cached:
        # One channel's encoder, transcoding live or remuxing from the ingest cache; and,
        # when measured, each of 100 channels' share of their ffmpegs, all from the cache.
        labels = ["transcoded live", "from the cache"]
        values = [cached["cores_live"], cached["cores_cached"]]
        per_channel = (many or {}).get("ffmpeg_cores_per_channel")
        if per_channel is not None:
            labels.append("from the cache,\n1 of 100 channels")
            values.append(per_channel)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        bars = ax.bar(labels, values, color=["tab:orange"] + ["tab:blue"] * (len(values) - 1))
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values])
        ax.axhline(0.02, color="k", linestyle="--", linewidth=1, label="target from the cache: 0.02")
        ax.set_ylabel("cores (ffmpeg CPU-s per s)")
        ax.set_title(f"CPU per live channel: {cached['source']} → {cached['channel_format']}", fontsize=9)
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        fig.suptitle(f"{report['when']} — {report['machine']}", fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, stem, "channels"))

    samples = _latency_samples(report)
    if samples:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        for label, values in samples.items():
            s = sorted(values)
            ax.step(s, [(i + 1) / len(s) for i in range(len(s))], where="post", label=f"{label} (n={len(s)})")
        ax.set_xscale("log")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.set_title("join and teardown latency (cumulative distribution)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, stem, "latency"))
    return written


def _latency_samples(report: dict) -> dict[str, list[float]]:
    out = {}
    for mode, v in (report.get("join") or {}).items():
        if isinstance(v, dict) and v.get("samples_ms"):
            out[f"join: {mode.replace('_', ' ')}"] = v["samples_ms"]
    churn = report.get("churn")
    if churn:
        out["churn: cold start, first packet"] = churn["samples_ms"]["first_packet"]
        out["churn: teardown, leave → ffmpeg exited"] = churn["samples_ms"]["ffmpeg_exited"]
    sbs = report.get("side_by_side")
    if sbs:
        biggest = max(r["viewers"] for r in sbs["runs"])
        for r in sbs["runs"]:
            if r["viewers"] == biggest and r["round"] == 0:
                out[f"{SERVER_NAMES.get(r['server'], r['server'])}: first byte, N={biggest}"] = r["first_media_samples_ms"]
    return {k: v for k, v in out.items() if v}


def _save(fig, stem: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = stem.with_name(f"{stem.name}-{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
