"""``frugalml retrain``: re-tune on new data, gate against the champion, promote on a pass.

With ``--listen`` it waits for a serving alert instead: point a ``frugalml serve``
monitoring config's ``webhooks`` at it, and each firing alert (of ``--on`` rules)
starts a retrain on the ``--data`` file as it is then.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from frugalml.exceptions import ConfigError
from frugalml.names import name_argument
from frugalml.ownership import STUDIES_ROOT

_MAX_EVENT_BYTES = 65_536


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrain", help="re-tune a study on new data, gate the new best against the champion, promote on a pass",
        epilog="exit status: 0 promoted, 1 the gate failed (the champion keeps serving), 2 a usage error.")
    parser.add_argument("study", help="the study the champion came from (a directory or a name under --root)")
    parser.add_argument("--data", required=True, help="the new data file (CSV/Parquet/npz, the champion's columns)")
    parser.add_argument("--model", required=True, type=name_argument("model"), help="the registered model's name")
    parser.add_argument("--alias", default="champion", type=name_argument("alias"), help="the alias that marks the champion (default champion)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the registry (default $MLFLOW_TRACKING_URI, else the study's own store)")
    parser.add_argument("--target", help="the target column, if it differs from the study's")
    parser.add_argument("--gate", metavar="TOML", help="a file with a [gate] table (see frugalml check)")
    parser.add_argument("--top", type=int, default=3, help="warm start: how many of the study's best configs re-run")
    parser.add_argument("--cold", action="store_true", help="search the whole space again instead")
    parser.add_argument("--out", help="the new study's directory (default <study>-retrain-N beside it)")
    parser.add_argument("--workload", help="which workload of a study with several")
    parser.add_argument("--root", default=STUDIES_ROOT)
    parser.add_argument("--trigger", default="manual", help="why this retrain runs, recorded (default manual)")
    parser.add_argument("--json", metavar="FILE", help="also write the gate's result as JSON")
    parser.add_argument("--listen", metavar="HOST:PORT", help="wait for alert webhooks and retrain on each")
    parser.add_argument("--on", action="append", default=[], metavar="RULE",
                        help="with --listen: only these alert rules trigger (repeatable; default any)")
    parser.add_argument("--once", action="store_true", help="with --listen: exit after the first retrain")
    parser.set_defaults(func=run_retrain)


def _retrain_once(args: argparse.Namespace, trigger: str) -> int:
    from frugalml.cli._format import wide_console
    from frugalml.cli._show import study_directory
    from frugalml.files import write_atomic
    from frugalml.gate import GateSettings, load_gate
    from frugalml.retrain import retrain

    console = wide_console()
    settings = load_gate(args.gate) if args.gate else GateSettings()
    done = retrain(study_directory(args.study, args.root), args.data, model=args.model, tracking_uri=args.tracking_uri,
                   alias=args.alias, target=args.target, gate=settings, top=args.top, cold=args.cold,
                   trigger=trigger, out=args.out, workload=args.workload, progress=console.print)
    if args.json:
        write_atomic(args.json, done.check.to_json())
    console.print(done.check.to_markdown())
    console.print(f"retrain ({trigger}): {done.trials} trials, {done.cpu_s:.1f} CPU-s; {args.model} version "
                  f"{done.candidate.version} " + (f"is now @{args.alias}" if done.promoted else
                                                   f"not promoted: @{args.alias} stays on version {done.champion}"))
    return 0 if done.promoted else 1


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen needs HOST:PORT, e.g. 127.0.0.1:9100. Got {value!r} instead.")
    return host.strip("[]"), int(port)


def _receiver(events: queue.Queue, rules: tuple[str, ...]) -> type[BaseHTTPRequestHandler]:
    from frugalml.retrain import alert_matches

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= _MAX_EVENT_BYTES:
                return self._answer(400, {"error": f"a JSON alert event of 1 to {_MAX_EVENT_BYTES} bytes is needed"})
            try:
                event = json.loads(self.rfile.read(length))
            except ValueError:
                return self._answer(400, {"error": "the body is not JSON"})
            if not alert_matches(event, rules):
                return self._answer(200, {"retrain": False})
            events.put(event)
            self._answer(202, {"retrain": True})

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: the retrain prints
            pass

    return Receiver


def _listen(args: argparse.Namespace) -> int:
    from frugalml.cli._format import wide_console

    host, port = _address(args.listen)
    events: queue.Queue = queue.Queue()
    try:
        server = ThreadingHTTPServer((host, port), _receiver(events, tuple(args.on)))
    except OSError as error:
        raise ConfigError(f"cannot listen on {args.listen}: {error.strerror or error}; pick another port.") from None
    threading.Thread(target=server.serve_forever, name="frugalml-alerts", daemon=True).start()
    console = wide_console()
    console.print(f"waiting for alerts ({', '.join(args.on) or 'any rule'}) on http://{host}:{server.server_port}/")
    code = 0
    try:
        while True:
            event = events.get()
            code = _retrain_once(args, f"alert: {event.get('rule')}")
            while not events.empty():  # alerts that fired during this retrain are answered by it
                events.get_nowait()
            if args.once:
                return code
    finally:
        server.shutdown()


def run_retrain(args: argparse.Namespace) -> int:
    if not args.listen and (args.on or args.once):
        raise ConfigError("--on and --once go with --listen HOST:PORT; add it, or drop them.")
    return _listen(args) if args.listen else _retrain_once(args, args.trigger)
