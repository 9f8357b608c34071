"""``braingemma3d serve``: the AI node beside the PACS, its workers, its users, its status and its purge."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from ..app.arguments import Command
from ..io.errors import InputError

log = logging.getLogger(__name__)

ACTIONS = ("run", "worker", "tokens", "status", "purge")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="the node's node.toml (docs/node.md)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("run", help="the node: HTTP API, DICOM listener, local workers (the default)")
    sub.add_parser("worker", help="one model-holding worker (one per GPU; on any machine sharing the broker)")
    tokens = sub.add_parser("tokens", help="users and their API tokens (stored hashed)")
    tokens.add_argument("what", choices=("create", "revoke", "list"))
    tokens.add_argument("user", nargs="?", help="user name (create, revoke)")
    sub.add_parser("status", help="queue length, jobs by state, workers and their devices, recent errors")
    purge = sub.add_parser("purge", help="remove everything of a study, or what retention says may go")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", help="Study Instance UID: its jobs, received instances and results")
    which.add_argument("--expired", action="store_true", help="what the retention policy lets go now")


def _store(cfg):
    from .store import JobStore

    store = JobStore(cfg.broker)
    if not store.ping():
        raise InputError(f"cannot reach the broker {cfg.broker} (is Redis running?)", cfg.path)
    return store


def _run(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config)
    action = args.action or "run"
    if action == "tokens":
        from .security import Tokens

        tokens = Tokens(cfg.data_dir)
        if args.what == "list":
            for entry in tokens.listing():
                state = f"revoked {entry['revoked']}" if entry["revoked"] else "active"
                print(f"{entry['user']:<24} created {entry['created']}  {state}")
            return 0
        if not args.user:
            raise InputError(f"serve tokens {args.what} needs a user name")
        if args.what == "create":
            print(tokens.create(args.user))
            print(
                f"the token of {args.user}: shown once, stored hashed; keep it in the client", file=sys.stderr
            )
        else:
            tokens.revoke(args.user)
            print(f"{args.user}: token revoked")
        return 0
    store = _store(cfg)
    if action == "status":
        from .api import node_status

        print(json.dumps(node_status(store), indent=2, default=str))
        return 0
    if action == "purge":
        from .retention import purge_expired, purge_study

        if args.study:
            print(f"{purge_study(cfg, store, args.study)} job(s) of study {args.study} removed")
        else:
            print(f"{len(purge_expired(cfg, store))} job(s) purged")
        return 0
    if action == "worker":
        return _worker(cfg)
    return _serve(cfg, store)


def _worker(cfg) -> int:
    from .tasks import QUEUE, make_app, start_worker

    app = make_app(cfg)
    start_worker(cfg)
    name = f"bg3d-{os.getpid()}@%h"
    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        QUEUE,
        "-n",
        name,
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0


def _slow_request_guard(seconds: float):
    """uvicorn's HTTP protocol with a limit on how long a connection may take to send a request's headers.

    uvicorn bounds an idle keep-alive connection but not one that sends its headers a byte at a time: without
    this, a few such clients hold the node's connections open for ever.  A connection must deliver its
    headers within ``seconds`` of opening (or of its previous response), else it gets 408 and is closed; a
    request under way is bounded by the API's own limits (its body's reads, ``request_timeout_s``)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class SlowRequestGuard(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _headers_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
            self._headers_timer = self.loop.call_later(seconds, self._too_slow)

        def _too_slow(self) -> None:
            if self.transport.is_closing() or self.cycle is not None and not self.cycle.response_complete:
                return  # closed, or a request under way
            body = b"the request headers came too slowly"
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            self.transport.close()

    return SlowRequestGuard


def _serve(cfg, store) -> int:
    import uvicorn

    from .api import create_app
    from .listener import Listener
    from .retention import purge_expired
    from .tasks import make_app, submit

    celery = make_app(cfg)
    # Each worker's torch uses every core by default: several CPU workers would fight over them (measured:
    # 2 workers drafted slower than 1, docs/results.md "Node"), so they share the cores.
    env = dict(os.environ)
    if cfg.workers > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cfg.workers))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "BrainGemma3DLib", "serve", "--config", str(cfg.path), "worker"], env=env
        )
        for _ in range(cfg.workers)
    ]
    listener = None
    if cfg.dicom_port:
        listener = Listener(cfg, store, lambda job: submit(cfg, job, celery))
        listener.start()
    stop = threading.Event()

    def retention():
        while not stop.wait(60.0):
            try:
                purge_expired(cfg, store)
            except Exception as exc:  # the node keeps serving; the next round tries again
                log.error("retention: %s", type(exc).__name__)

    threading.Thread(target=retention, name="retention", daemon=True).start()
    ssl = {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key)} if cfg.tls_cert else {}
    print(
        f"BrainGemma3D node on {cfg.url}"
        + (f", DICOM {cfg.dicom_ae_title}:{cfg.dicom_port}" if cfg.dicom_port else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(cfg, store=store),
            host=cfg.http_host,
            port=cfg.http_port,
            log_level="warning",
            timeout_keep_alive=5,
            http=_slow_request_guard(cfg.request_timeout_s),
            **ssl,
        )
    finally:
        stop.set()
        if listener is not None:
            listener.stop()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


COMMANDS = [
    Command(
        "serve",
        "the AI node beside the PACS: HTTP API, DICOM listener, job queue, workers (docs/node.md)",
        _arguments,
        _run,
    )
]
