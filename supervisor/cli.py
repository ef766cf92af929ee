"""retrovue-air's command line: parse, load the config, bind (or take systemd's socket), run the supervisor."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from retrovue_air import __version__, config, logs

from .arbiter import Supervisor, listen, raise_fd_limit
from .socket_activation import listen_fds

log = logging.getLogger("supervisor")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="retrovue-air", description="Live MPEG-TS channels over HTTP.")
    p.add_argument("--config", metavar="FILE", help="TOML configuration (default: the built-in test channels)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default: the config's, 127.0.0.1:8000)")
    p.add_argument("--check-config", metavar="FILE", help="validate FILE and exit")
    p.add_argument("--print-default-config", action="store_true", help="print the built-in configuration")
    p.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="overrides the config's log_level (default: INFO)")
    p.add_argument("--version", action="version", version=f"retrovue-air {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ingest"]:  # `retrovue-air ingest --config FILE` (issue 13)
        from ingest.ahead_of_time import main as ingest_main

        logs.setup("INFO")
        logs.set_role("ingest")
        return ingest_main(argv[1:])
    args = parse_args(argv)
    logs.setup(args.log_level or "INFO")
    if args.print_default_config:
        sys.stdout.write(config.default_config_text())
        return 0
    try:
        if args.check_config:
            cfg = config.load(args.check_config)
            print(f"{args.check_config}: ok, {len(cfg.channels)} channels")
            return 0
        cfg = config.load(args.config) if args.config else config.load_default()
        if args.listen:
            try:
                cfg = _with_listen(cfg, config.parse_listen(args.listen))
            except ValueError as e:
                raise config.ConfigError("--listen", None, None, str(e)) from None
            config.check_relay_loops(cfg)  # the file's own listen was checked when it loaded
    except config.ConfigError as e:
        log.error("bad configuration: %s", e)
        return 2
    except Exception as e:  # noqa: BLE001 -- a file the checks did not foresee is still a bad file, not a crash
        log.error("cannot check the configuration %s: %s: %s (the traceback is logged at --log-level debug)",
                  args.check_config or args.config or config.BUILT_IN, type(e).__name__, e)
        log.debug("checking the configuration failed", exc_info=True)
        return 2
    if not args.log_level and getattr(cfg, "log_level", None):
        logs.setup(cfg.log_level)
    raise_fd_limit()
    try:
        listener = passed_listener()
    except OSError as e:
        log.error("cannot use the socket passed by systemd: %s", e)
        return 1
    if listener is not None:
        host, port = listener.getsockname()[:2]
        log.info("using the socket passed by systemd (%s:%d); the configured listen address %s:%d is not bound",
                 host, port, *cfg.listen)
    else:
        host, port = cfg.listen
        try:
            listener = listen(host, port)
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", host, port, e.strerror)
            return 1
    log.info("retrovue-air %s: %d channels from %s, on http://%s:%d/", __version__,
             len(cfg.channels), cfg.path, host, port)
    return Supervisor(cfg, listener).run()


def passed_listener() -> socket.socket | None:
    """The listening TCP socket systemd passed (retrovue-air.socket), or None when none was.

    The LISTEN_* variables are removed from the environment either way, so that no child
    inherits them. Only the first socket is served; others are closed with a warning.
    """
    sockets = listen_fds(os.environ)
    if not sockets:
        return None
    first, *extra = sockets
    for sock in extra:
        log.warning("ignoring extra socket passed by systemd (fd %d)", sock.fileno())
        sock.close()
    ok = (first.family in (socket.AF_INET, socket.AF_INET6) and first.type == socket.SOCK_STREAM
          and first.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    if not ok:
        first.close()
        raise OSError("fd 3 is not a listening TCP socket (want ListenStream=HOST:PORT)")
    return first


def _with_listen(cfg: config.Config, listen_at: tuple[str, int]) -> config.Config:
    import dataclasses

    return dataclasses.replace(cfg, listen=listen_at)
