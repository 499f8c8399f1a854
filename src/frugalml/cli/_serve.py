"""``frugalml register``, ``frugalml serve`` and ``frugalml monitor``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from frugalml.exceptions import ConfigError, FrugalError
from frugalml.names import name_argument
from frugalml.ownership import STUDIES_ROOT


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    register = subparsers.add_parser("register", help="refit a study's best feasible config and register it in MLflow")
    register.add_argument("study", help="a study directory (or a study name under --root)")
    register.add_argument("--root", default=STUDIES_ROOT)
    register.add_argument("--name", type=name_argument("model"), help="registered model name (default <study>-<workload>)")
    register.add_argument("--alias", type=name_argument("alias"), help="point this alias (e.g. champion) at the new version")
    register.add_argument("--workload", help="which workload's best config (when the study has several)")
    register.add_argument("--monitoring", metavar="TOML", help="a monitoring config stored with the model")
    register.add_argument("--tracking-uri", help="default: the study's own MLflow store")
    register.set_defaults(func=run_register)

    serve = subparsers.add_parser("serve", help="serve a model over HTTP with monitoring")
    serve.add_argument("model_uri", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a model directory")
    serve.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                       help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    serve.add_argument("--study", help="use this study directory's MLflow store as the tracking URI")
    serve.add_argument("--reference", metavar="DATA",
                       help="for a model not registered by frugalml: a Parquet/CSV table of its inputs "
                            "(and an optional 'target' column) that drift and quality are measured against")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", default=os.environ.get("FRUGALML_ADMIN_TOKEN"),
                       help="bearer token for /admin endpoints (default $FRUGALML_ADMIN_TOKEN; none: disabled)")
    serve.add_argument("--predict-token", default=os.environ.get("FRUGALML_PREDICT_TOKEN"),
                       help="bearer token required on /predict and /feedback (default $FRUGALML_PREDICT_TOKEN)")
    serve.add_argument("--max-body-bytes", type=int, default=1_048_576)
    serve.add_argument("--max-rows", type=int, default=10_000, help="rows per predict request")
    serve.add_argument("--rate-limit", metavar="R/s", help="requests per second per client, e.g. 200/s")
    serve.add_argument("--body-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="answer 408 when a request body has not fully arrived by then")
    serve.add_argument("--poll-registry", metavar="SECONDS",
                       help="for models:/NAME@ALIAS: check the alias this often and swap in the version it "
                            "moves to (default 30; 0: never)")
    serve.add_argument("--config", metavar="TOML", help="monitoring config (default: the model's own, else defaults)")
    serve.add_argument("--max-feature-series", type=int, default=None, metavar="N",
                       help="at most N input features get their own series on /metrics: the drifted ones first, "
                            "aggregates cover the rest (default 10; 0: aggregates only)")
    serve.add_argument("--max-batch-size", type=int, metavar="N",
                       help="adaptive batching: predict requests that arrive together share one model call of at "
                            "most N rows (a larger request is predicted alone); default: one call per request")
    serve.add_argument("--max-batch-wait-ms", type=float, metavar="MS",
                       help="with --max-batch-size: a request's rows wait at most MS for others to join (default 0: "
                            "only requests that came while the model was busy share a call)")
    serve.add_argument("--workers", type=_workers, metavar="N",
                       help="serve with N worker processes that share one monitoring state (ids, drift, quality, "
                            "alerts, /metrics); default: one process")
    serve.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="local: this machine (one process, or --workers N); ray: Ray Serve replicas on a Ray "
                            "cluster (--address, --replicas) sharing one monitoring state")
    serve.add_argument("--address", metavar="HOST:PORT",
                       help="with --backend ray: the Ray cluster's head (default $RAY_ADDRESS, else a local Ray)")
    serve.add_argument("--replicas", type=_workers, metavar="N",
                       help="with --backend ray: replicas to serve with, one CPU each (default 1)")
    serve.add_argument("--max-replicas", type=_workers, metavar="N",
                       help="with --backend ray: let Ray Serve add replicas under load, up to N")
    serve.add_argument("--challenger", metavar="MODEL_URI",
                       help="a second version (e.g. models:/NAME@challenger) compared with the served one on live "
                            "traffic: shadow (--mirror, the default) or answering a share (--canary P); see GET "
                            "/challenger")
    serve.add_argument("--mirror", action="store_true",
                       help="send every request to the challenger too; its answer is recorded, never returned")
    serve.add_argument("--canary", metavar="P", help="let the challenger answer a share P in [0, 1] of the requests")
    serve.add_argument("--challenger-timeout", type=float, default=1.0, metavar="SECONDS",
                       help="a canary request waits this long for the challenger, then the champion answers "
                            "(counted as a challenger timeout; default 1)")
    serve.add_argument("--print-slo-rules", action="store_true",
                       help="print Prometheus alerting rules from the model's SLO (the serving budgets it was tuned "
                            "under) and exit; save them and add the file to rule_files: in prometheus.yml")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(func=run_serve)

    monitor = subparsers.add_parser("monitor", help="live view of a running server's metrics")
    monitor.add_argument("target", metavar="MODEL_OR_URL",
                         help="a server URL, or the model URI/name of a server started with frugalml serve")
    monitor.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    monitor.add_argument("--once", action="store_true", help="print one snapshot and exit")
    monitor.set_defaults(func=run_monitor)


def run_register(args: argparse.Namespace) -> int:
    from rich.table import Table

    from frugalml.cli._format import wide_console
    from frugalml.cli._show import study_directory
    from frugalml.registry import register

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    directory = study_directory(args.study, args.root)
    monitoring = None
    if args.monitoring:
        from frugalml.serve import as_monitoring_config

        monitoring = as_monitoring_config(args.monitoring)
    version = register(directory, name=args.name, alias=args.alias, workload=args.workload, monitoring=monitoring,
                       tracking_uri=args.tracking_uri)
    console = wide_console()
    console.print(f"registered [bold]{version.name}[/] version {version.version}"
                  + (f" (alias {version.alias})" if version.alias else "") + f" in {version.tracking_uri}")
    table = Table(title="profile")
    table.add_column("metric")
    table.add_column("value")
    for name, value in version.profile.items():
        table.add_row(name, f"{value:.4g}")
    console.print(table)
    console.print(f"serve it: frugalml serve {version.model_uri} --tracking-uri {version.tracking_uri}")
    return 0


def _number(text: str | None) -> float | str | None:
    """A number given on the command line, else the text as it is (for the settings to refuse)."""
    try:
        return None if text is None else float(text)
    except ValueError:
        return text


def _workers(text: str) -> int:
    """``--workers``, ``--replicas``, ``--max-replicas``: a positive integer (argparse prints the message as one line and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"must be an integer of at least 1. Got {text!r} instead.")
    return value


def run_serve(args: argparse.Namespace) -> int:
    from frugalml.serve import ServerSettings, registry_alias, run_server

    tracking_uri = args.tracking_uri
    if args.study:
        from frugalml.cli._show import study_directory
        from frugalml.registry import study_tracking_uri

        tracking_uri = study_tracking_uri(study_directory(args.study, STUDIES_ROOT))
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535]. Got {args.port} instead.")
    limits = {} if args.max_feature_series is None else {"max_feature_series": args.max_feature_series}
    settings = ServerSettings(token=args.token, predict_token=args.predict_token, max_body_bytes=args.max_body_bytes,
                              max_rows=args.max_rows, rate_limit=args.rate_limit, tracking_uri=tracking_uri,
                              body_timeout_s=args.body_timeout, reference=args.reference,
                              poll_registry_s=_number(args.poll_registry), max_batch_size=args.max_batch_size,
                              max_batch_wait_ms=args.max_batch_wait_ms, **limits)
    from frugalml.serve import challenger_settings

    challenger = challenger_settings(args.challenger, args.mirror, args.canary, args.workers, args.challenger_timeout)
    from frugalml.serve import ray_settings

    address = args.address or (os.environ.get("RAY_ADDRESS") if args.backend == "ray" else None)
    on_ray = ray_settings(args.backend, address, args.replicas, args.max_replicas, args.workers, challenger)
    if args.print_slo_rules:
        return _print_slo_rules(args.model_uri, tracking_uri, args.reference)
    if args.poll_registry is not None and registry_alias(args.model_uri) is None:
        print("frugalml: note: --poll-registry is ignored: only a models:/NAME@ALIAS URI has an alias to follow.",
              file=sys.stderr)
    run_server(args.model_uri, host=args.host, port=args.port, settings=settings, config=args.config,
               log_level=args.log_level, access_log=args.access_log, workers=args.workers, challenger=challenger,
               ray=on_ray)
    return 0


def _print_slo_rules(uri: str, tracking_uri: str | None, reference: str | None) -> int:
    from frugalml.deploy import SLO_TAG
    from frugalml.serve import LATENCY_BUDGET, ServedSlo, load_model, prometheus_rules

    served = load_model(uri, tracking_uri, reference)
    slo = ServedSlo.of(served)
    if slo is None:
        raise ConfigError(f"{uri} has no SLO (no {SLO_TAG} tag on its version): register it with `frugalml register` "
                          f"from a study with serving budgets ({LATENCY_BUDGET} = ... in [budget]).")
    if LATENCY_BUDGET not in slo.slo.limits:
        raise ConfigError(f"the SLO of {uri} ({', '.join(sorted(slo.slo.limits))}) has no {LATENCY_BUDGET}: nothing "
                          "the server measures live to alert on; `frugalml check` holds a candidate to the rest.")
    sys.stdout.write(prometheus_rules(slo, uri))
    return 0


def _server_url(target: str) -> str:
    if target.startswith(("http://", "https://")):
        return target.rstrip("/")
    from frugalml.serve import running_servers

    servers = running_servers()
    matches = [entry for entry in servers if target in (entry.get("model_uri"), entry.get("name"))
               or entry.get("model_uri", "").startswith((f"models:/{target}@", f"models:/{target}/"))]
    if len({entry["url"] for entry in matches}) == 1:
        return matches[0]["url"]
    if matches:  # a first match would be whichever server started first: say so rather than guess
        raise FrugalError(f"{len(matches)} running servers match {target!r} ({_listed(matches)}); pass the URL of "
                          "the one to watch.")
    raise FrugalError(f"no running server for {target!r} (running: {_listed(servers) or 'none'}); pass the "
                      "server's URL instead.")


def _listed(servers: list[dict]) -> str:
    return ", ".join(f"{e.get('model_uri')} at {e.get('url')}" for e in servers)


def run_monitor(args: argparse.Namespace) -> int:
    import httpx
    from rich.live import Live

    from frugalml.cli._format import wide_console
    from frugalml.serve import dashboard, render

    url = _server_url(args.target)
    if not 0 < args.interval < 24 * 3600:
        raise ConfigError(f"--interval must be a number of seconds in (0, 86400). Got {args.interval} instead.")

    def scrape(previous):
        try:
            response = httpx.get(f"{url}/metrics", timeout=5)
            response.raise_for_status()
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise FrugalError(f"cannot read {url}/metrics: {error}") from None
        return dashboard(response.text, previous)

    console = wide_console()
    board = scrape(None)
    if args.once:
        console.print(render(board, url))
        return 0
    try:
        if not console.is_terminal:  # piped or logged: Live would draw nothing until it ends; a frame each interval
            try:
                while True:
                    console.print(render(board, url))
                    console.file.flush()
                    time.sleep(args.interval)
                    board = scrape(board)
            except BrokenPipeError:  # `| head` has what it wanted
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor fails flushing at exit
                return 0
        with Live(render(board, url), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(args.interval)
                board = scrape(board)
                live.update(render(board, url))
    except KeyboardInterrupt:
        return 0
