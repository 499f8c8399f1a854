"""The HTTP prediction API (FastAPI). Thin: it validates, predicts, and hands rows to the monitor.

Endpoints: ``POST /predict``, ``POST /feedback``, ``GET /health``, ``GET /metrics``,
``POST /admin/reload``, ``GET|PUT /admin/monitoring-config``. Every refusal is a 4xx
with a one-line JSON body ``{"error": "...", "kind": "..."}`` (:func:`error_body`; also what
the HTTP layer answers to a request it cannot parse). A ``models:/NAME@ALIAS`` model follows
its alias (:func:`_follow_alias`). With ``--max-batch-size`` predict requests that arrive together
share model calls (:mod:`frugalml.serve._batching`), each still monitored as its own request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from frugalml import __version__ as frugalml_version
from frugalml.exceptions import FrugalError, one_line
from frugalml.serve import _mlflow as mlflow_protocol
from frugalml.serve import _schema as schema
from frugalml.serve import _v2 as v2
from frugalml.serve._batching import Batcher
from frugalml.serve._challenger import ANSWERED, ROLE_HEADER, VERSION_HEADER, Challenger, ChallengerCollector
from frugalml.serve._config import MonitoringConfig, as_monitoring_config
from frugalml.serve._estimate import class_probabilities
from frugalml.serve._feedback import accept_feedback
from frugalml.serve._metrics import PREDICT_ENDPOINTS, MonitorCollector, ProcessCollector, ServerMetrics
from frugalml.serve._model import ServedModel, load_model, release
from frugalml.serve._monitor import ServingMonitor
from frugalml.serve._quality import PredictionLog
from frugalml.serve._remote import HubLink
from frugalml.serve._security import RateLimiter, check_token
from frugalml.serve._settings import ServerSettings, registry_alias
from frugalml.serve._slo import ServedSlo
from frugalml.serve._slo import status as slo_status
from frugalml.serve._validate import (
    MixedRows,
    RequestError,
    nonfinite_counts,
    parse_json,
    parse_predict,
    reject_nonfinite,
)

logger = logging.getLogger("frugalml.serve")
_JSON = "application/json"
_JSON_ONLY = frozenset({_JSON})
# Triton's and KServe's clients send binary tensors with no Content-Type (or octet-stream); a browser can
# send such a body cross-site too, so a server reachable from browsers should require --predict-token.
_V2_MEDIA = frozenset({_JSON, "application/octet-stream", ""})
_MONITOR_POLL_S = 0.02  # how often the event loop asks the monitor whether it has work
WORKER_HEADER = b"x-frugalml-worker"  # with --workers N: the index of the worker that answered
NODE_HEADER = b"x-frugalml-node"  # with --backend ray: the Ray node of the replica that answered


class _State:
    """What the endpoints share; swapped atomically on reload or reconfiguration."""

    def __init__(self, served: ServedModel, settings: ServerSettings, config: MonitoringConfig,
                 loader: Callable[[str], ServedModel], hub: HubLink | None = None) -> None:
        self.served = served
        self.settings = settings
        self.config = config
        self.loader = loader
        self.metrics = ServerMetrics()
        self.ids = PredictionLog()
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
        self.hub = hub  # a worker of `frugalml serve --workers N`: the monitor process keeps the state
        self.challenger: Challenger | None = None  # --challenger: a second version in shadow or canary
        self.started = time.time()
        self.closing = False  # the app is shutting down: a model loaded now will not be served
        self._loading = threading.Lock()
        self.batcher = None if settings.max_batch_size is None else Batcher(
            settings.max_batch_size, (settings.max_batch_wait_ms or 0.0) / 1e3,
            on_call=self.count_model_call)
        self._output_type: tuple[ServedModel | None, str] = (None, "")
        self.slo = ServedSlo.of(served)  # the SLO the model is held to (its version's frugalml.slo tag)
        self.metrics.follow_slo(self.slo)
        if hub is not None:
            hub.registry = self.metrics.registry  # its samples go to the monitor process, summed there
            self.monitor: ServingMonitor | HubLink | None = hub if hub.monitored else None
            return
        self.monitor = self._new_monitor(served, config, self.slo)
        self.metrics.registry.register(ProcessCollector())
        self.metrics.registry.register(MonitorCollector(lambda: self.served, lambda: self.monitor,
                                                        settings.max_feature_series, lambda: self.slo))

    @staticmethod
    def _new_monitor(served: ServedModel, config: MonitoringConfig, slo: ServedSlo | None) -> ServingMonitor | None:
        if not config.enabled or not served.reference.has_statistics:
            return None  # no training statistics (served without --reference): nothing to monitor against
        return ServingMonitor(served.reference, config, model=served.model, name=served.name or served.uri, slo=slo)

    def apply(self, served: ServedModel, config: MonitoringConfig) -> None:
        old = self.monitor
        if old is not None and served is self.served and config.enabled:
            old.configure(config)
        else:
            slo = self.slo if served is self.served else ServedSlo.of(served, self.slo)
            if slo is not None and slo is self.slo and served is not self.served and slo.version != served.version:
                logger.warning("version %s of %s carries no SLO; the server keeps holding it to version %s's (%s)",
                               served.version or "-", served.name, slo.version, slo.slo.to_json())
            self.slo = slo
            self.metrics.follow_slo(slo)
            self.monitor = self._new_monitor(served, config, slo)
            if old is not None:
                old.stop()
        replaced, self.served, self.config = self.served, served, config
        if replaced is not served and replaced.download != served.download:
            # its files (the model itself is in memory, answering what is in flight), off the event loop
            threading.Thread(target=release, args=(replaced,), name="frugalml-release").start()

    def load(self, uri: str) -> ServedModel:
        """``loader(uri)``, one at a time (call it from a worker thread); a copy of a remote model loaded
        while the app shuts down is removed, since nothing will serve it."""
        with self._loading:
            served = self.loader(uri)
            if self.closing:
                release(served)
            return served

    def close(self, timeout: float = 10.0) -> None:
        """Once :attr:`closing` is set: wait for a load in flight (up to ``timeout``), then remove the
        served copies (worker thread)."""
        if self._loading.acquire(timeout=timeout):
            self._loading.release()
        if self.challenger is not None:
            release(self.challenger.served)
        release(self.served)

    async def slo_health(self) -> dict[str, Any] | None:
        """The SLO part of ``/health`` (None: the model has none)."""
        if self.slo is None:
            return None
        monitor = self.monitor
        live: tuple[float | None, int] = (None, 0)
        if isinstance(monitor, HubLink):
            live = await run_in_threadpool(monitor.slo_live)
        elif monitor is not None:
            state = monitor.state()
            live = (state.slo_predict_ms, state.slo_requests)
        return slo_status(self.slo, self.served.version, *live, self.config, monitor is not None)

    def output_type(self, served: ServedModel) -> str:
        """The v2 datatype ``served`` answers with (one prediction on a typical row), kept per model."""
        if self._output_type[0] is not served:
            self._output_type = (served, v2.datatype(_probe(served)))
        return self._output_type[1]

    def count_model_call(self) -> None:
        if self.config.enabled:
            self.metrics.model_calls.inc()

    def error(self, kind: str) -> None:
        if self.config.enabled:
            self.metrics.errors.labels(kind).inc()


def _scorer(model: Any, probabilities: bool, confidence: bool) -> Callable[[np.ndarray], tuple[Any, Any, Any]]:
    """The model call of a predict request: rows -> (predictions, confidence, class probabilities).

    One ``predict_proba`` gives all three when the request asks for ``probabilities`` or the monitor
    wants ``confidence`` (CBPE); else ``predict`` alone. A model without probabilities answers
    ``(None, None, None)`` to a request for them. Overflow raises FloatingPointError (in whichever
    thread runs it: numpy's error state is per thread)."""
    def score(inputs: np.ndarray) -> tuple[Any, Any, Any]:
        with np.errstate(over="raise"):
            scored = class_probabilities(model, inputs) if probabilities or confidence else None
            if scored is not None:
                return scored
            return (None, None, None) if probabilities else (model.predict(inputs), None, None)

    return score


def _probe(served: ServedModel) -> np.ndarray:
    """The model's answer to one typical row (:meth:`Reference.typical_row`), or, where the model
    refuses that row, an array of the type its task implies."""
    reference = served.reference
    try:
        return np.asarray(served.model.predict(reference.typical_row()[None, :]))
    except Exception:  # noqa: BLE001 - a guess is all metadata needs then
        classes = getattr(served.model, "classes_", None)
        return np.asarray(classes if classes is not None else [0.0 if reference.task == "regression" else ""])


async def _drive_monitor(state: _State) -> None:
    """Run the monitor's processing on the event loop between requests, when it has work.

    A monitor thread would contend with the request path for the GIL, and each hand-over
    can cost a request up to the interpreter's 5 ms switch interval; here a window's
    PSI/KS (~2 ms for 500 rows) simply runs between two requests.
    """
    while True:
        await asyncio.sleep(_MONITOR_POLL_S)
        monitor = state.hub or state.monitor  # a worker's hub link ships its rows and counters instead
        if monitor is not None and monitor.due(time.monotonic()):
            try:
                monitor.process()
            except Exception:  # keep serving whatever one window does
                logger.exception("monitoring failed to process a window")


def _alias_version(tracking_uri: str | None, name: str, alias: str) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return str(client.get_model_version_by_alias(name, alias).version)


async def _follow_alias(state: _State, interval: float) -> None:
    """Every ``interval`` seconds, swap in the version the served ``models:/NAME@ALIAS`` points at once it moved.

    The registry lookup and the load run in a worker thread, so the old model answers
    requests until the swap, one assignment on the event loop between two requests: no
    request fails. A registry or load error is logged once per distinct message and the
    old model keeps serving.
    """
    reported = None
    while True:
        await asyncio.sleep(interval)
        served = state.served
        alias = registry_alias(served.uri)
        if alias is None:  # an /admin/reload moved the server off the alias
            continue
        try:
            version = await run_in_threadpool(_alias_version, state.settings.tracking_uri, *alias)
            if version == served.version:
                reported = None
                continue
            new = await run_in_threadpool(state.load, served.uri)
        except Exception as error:  # noqa: BLE001 - the registry's or the model's: keep serving the old one
            state.metrics.reloads["error"].inc()
            message = one_line(error, typed=True)
            if message != reported:
                logger.warning("cannot follow %s (still serving version %s): %s", served.uri,
                               served.version or "-", message)
                reported = message
            continue
        reported = None
        if state.served is not served or new.version == served.version:
            await run_in_threadpool(release, new)
            continue  # an /admin/reload swapped meanwhile, or the alias moved back
        state.apply(new, state.config)
        state.metrics.reloads["ok"].inc()
        logger.info("%s moved: now serving version %s (was %s)", served.uri, new.version, served.version or "-")


class _Instrumentation:
    """Pure ASGI middleware: request count, latency histogram and in-flight gauge, and
    the 500 answer to an unexpected error (answered here, it is logged once and the
    connection stays open; Starlette's outermost handler would log it twice and re-raise)."""

    def __init__(self, app: Any, state: _State) -> None:
        self.app = app
        self.state = state
        # which worker answered (--workers N): a client, or a test, can tell them apart
        hub = state.hub
        self.worker = None if hub is None else [(WORKER_HEADER, str(hub.worker).encode()), *(
            [(NODE_HEADER, hub.node.encode())] if hub.node is not None else [])]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        metrics = state.metrics if state.config.enabled else None
        status, started = 500, False

        worker = self.worker

        async def send_and_record(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                if worker is not None:
                    message["headers"] = [*message.get("headers", ()), *worker]
                answered = scope.get(ANSWERED)  # with --challenger: which version answered this prediction
                if answered is not None:
                    message["headers"] = [*message.get("headers", ()), (ROLE_HEADER, answered[0].encode()),
                                          (VERSION_HEADER, answered[1].encode())]
            await send(message)

        if metrics is not None:
            metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_record)
        except Exception as error:  # noqa: BLE001 - every request gets an answer
            logger.exception("internal error on %s", scope["path"])
            state.error("internal")
            if not started:
                response = _error_response(500, "internal", "internal error; the server log has the details.")
                await response(scope, receive, send_and_record)
        finally:
            if metrics is not None:
                elapsed = time.perf_counter() - start
                endpoint = metrics.endpoint(scope["path"])
                metrics.in_flight.dec()
                metrics.observe(endpoint, status, elapsed)
                monitor = state.hub or state.monitor
                if monitor is not None:
                    monitor.observe_request(elapsed if endpoint in PREDICT_ENDPOINTS else None, status < 400)
            if state.challenger is not None and state.metrics.endpoint(scope["path"]) in PREDICT_ENDPOINTS:
                state.challenger.observe_request(scope, state.served.version, status, time.perf_counter() - start)


_BODY_LEFT_UNREAD = frozenset({"too_large", "body_timeout"})


def error_body(kind: str, message: str) -> dict[str, str]:
    """The one JSON error format, ``{"error": message, "kind": kind}``, as valid UTF-8."""
    return {"error": message.encode("utf-8", "backslashreplace").decode("utf-8"),  # lone surrogates from a request
            "kind": kind}


def _error_response(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "1"} if status == 429 else None
    if kind in _BODY_LEFT_UNREAD:  # else uvicorn keeps the connection for the rest of the body, however slow
        headers = {"Connection": "close"}
    return JSONResponse(error_body(kind, message), status_code=status, headers=headers)


async def _read_body(request: Request, settings: ServerSettings, media: frozenset[str] = _JSON_ONLY) -> bytes:
    limit = settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > limit):
        raise RequestError(413, "too_large", f"request body of {length} bytes is over the limit of {limit} bytes.")
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise RequestError(413, "too_large", f"request body is over the limit of {limit} bytes.")
    except TimeoutError:
        raise RequestError(408, "body_timeout", f"the request body did not arrive within {settings.body_timeout_s:g} s "
                                                f"({len(body)} bytes came).") from None
    except ClientDisconnect:  # nobody is left to answer; counted, not logged as a server error
        raise RequestError(400, "client_disconnected", "the client hung up before sending the whole body.") from None
    if body.strip():
        _check_media(request, media)
    return bytes(body)


def _check_media(request: Request, media: frozenset[str]) -> None:
    """A body must say it is JSON (or another type ``media`` allows): a cross-site form post
    (form-encoded, text/plain) is refused."""
    got = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if got not in media and not (got.endswith("+json") and _JSON in media):
        wanted = " or ".join(sorted(m for m in media if m))
        raise RequestError(415, "unsupported_media_type",
                           f"send the body with Content-Type: {wanted} (got {got or 'none'!r}).")


def _jsonable(predictions: np.ndarray) -> list[Any]:
    values = predictions.tolist()
    if predictions.dtype.kind == "f" and not np.isfinite(predictions).all():
        return [v if math.isfinite(v) else None for v in values]
    return values


def _get_and_head(app: FastAPI, path: str, description: str | None = None) -> Callable[[Callable], Callable]:
    """Route GET and HEAD on ``path`` to one function; only GET is in the OpenAPI schema (one
    operationId each)."""
    def register(endpoint: Callable) -> Callable:
        app.get(path, description=description)(endpoint)
        app.head(path, include_in_schema=False)(endpoint)
        return endpoint

    return register


def _v2_routes(app: FastAPI, state: _State, predict_rows: Callable, get_and_head: Callable) -> None:
    """The Open Inference Protocol v2 (KServe, Triton): health, server and model metadata, infer;
    each model route also under ``/versions/{version}``."""

    def model(name: str, version: str | None = None) -> ServedModel:
        served = state.served
        if name not in (served.name or "model", "model"):
            raise RequestError(404, "not_found", f"no model {name[:60]!r} here; this server serves "
                                                 f"{served.name or 'model'!r}.")
        if version is not None and version != _v2_version(served):
            raise RequestError(404, "not_found", f"model {name[:60]!r} has no version {version[:20]!r} here; this "
                                                 f"server serves version {_v2_version(served)!r}.")
        return served

    async def health() -> dict[str, Any]:
        return {"live": True, "ready": True}

    async def server_metadata() -> dict[str, Any]:
        return {"name": "frugalml", "version": frugalml_version, "extensions": ["binary_tensor_data"]}

    def metadata(name: str, version: str | None = None) -> dict[str, Any]:
        served = model(name, version)
        features, text = served.reference.feature_names, served.reference.categorical
        return {"name": served.name or "model", "versions": [_v2_version(served)], "platform": "mlflow",
                "inputs": [{"name": "input-0", "datatype": "BYTES" if any(text) else "FP64",
                            "shape": [-1, len(features)]},
                           *({"name": f, "datatype": "BYTES" if t else "FP64", "shape": [-1]}
                             for f, t in zip(features, text))],
                "outputs": [{"name": v2.OUTPUT, "datatype": state.output_type(served), "shape": [-1]}]}

    def ready(name: str, version: str | None = None) -> dict[str, Any]:
        model(name, version)
        return {"name": name, "ready": True}

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        """The Open Inference Protocol v2 (KServe, Triton), JSON or binary tensors; the prediction ids
        are in ``parameters``."""
        model(name, version)
        parsed: list[v2.V2Request] = []

        def parse(body: bytes, reference: Any, *, max_rows: int) -> np.ndarray:
            parsed.append(v2.parse_request(body, request.headers.get("inference-header-content-length"),
                                           reference, max_rows=max_rows))
            return parsed[0].rows

        served, predictions, ids = await predict_rows(request, parse, "/v2/models/{name}/infer", _V2_MEDIA)
        body, headers = v2.response(parsed[0], served.name or "model", _v2_version(served), predictions,
                                    v2.datatype(predictions), _jsonable(predictions), ids)
        return Response(body, headers=headers)

    async def model_metadata(name: str) -> dict[str, Any]:
        return metadata(name)

    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        return metadata(name, version)

    async def model_ready(name: str) -> dict[str, Any]:
        return ready(name)

    async def version_ready(name: str, version: str) -> dict[str, Any]:
        return ready(name, version)

    async def model_infer(name: str, request: Request) -> Response:
        return await infer(request, name)

    async def version_infer(name: str, version: str, request: Request) -> Response:
        return await infer(request, name, version)

    get_and_head("/v2", "Server metadata (name, version, extensions).")(server_metadata)
    get_and_head("/v2/health/live")(health)
    get_and_head("/v2/health/ready")(health)
    what = "Model metadata: inputs, outputs and their datatypes."
    get_and_head("/v2/models/{name}", what)(model_metadata)
    get_and_head("/v2/models/{name}/versions/{version}", what)(version_metadata)
    get_and_head("/v2/models/{name}/ready")(model_ready)
    get_and_head("/v2/models/{name}/versions/{version}/ready")(version_ready)
    infer_schema = schema.body(schema.V2_INFER, schema.V2_INFERRED, binary=True)
    app.post("/v2/models/{name}/infer", openapi_extra=infer_schema, description=infer.__doc__)(model_infer)
    app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=infer_schema,
             description=infer.__doc__)(version_infer)


def _v2_version(served: ServedModel) -> str:
    return served.version or "1"


def create_app(served: ServedModel, settings: ServerSettings | None = None, config: Any = None, *,
               loader: Callable[[str], ServedModel] | None = None, hub: HubLink | None = None,
               challenger: Challenger | None = None) -> FastAPI:
    """Build the app for ``served``; ``config`` defaults to the model's stored monitoring config.
    With ``hub`` the app is one worker of ``frugalml serve --workers N``: the monitor process keeps
    the monitoring state, and the model does not follow its alias. With ``challenger`` (started) a
    second version meets the traffic in shadow or canary (:mod:`frugalml.serve._challenger`).
    When the app shuts down, the copies of remote models it serves are removed (:func:`release`)."""
    settings = settings or ServerSettings()
    config = as_monitoring_config(config if config is not None else served.monitoring)
    state = _State(served, settings, config, loader or (lambda uri: load_model(uri, settings.tracking_uri, settings.reference)),
                   hub)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        interval = settings.poll_interval(state.served.uri) if hub is None else 0
        tasks = [asyncio.create_task(_drive_monitor(state)),
                 *([asyncio.create_task(_follow_alias(state, interval))] if interval else [])]
        yield
        state.closing = True
        for task in tasks:
            task.cancel()
        if state.batcher is not None:
            await state.batcher.close()
        if state.challenger is not None:
            state.challenger.close()
        # the served copies go here, not after uvicorn returns: on SIGTERM it ends the process by the signal
        await run_in_threadpool(state.close)

    app = FastAPI(title="frugalml serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.frugalml = state
    if challenger is not None:
        state.challenger = challenger
        state.metrics.registry.register(ChallengerCollector(challenger))
    app.add_middleware(_Instrumentation, state=state)
    get_and_head = functools.partial(_get_and_head, app)

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        state.error(error.kind)
        return _error_response(error.status, error.kind, error.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        state.error(kind)
        return _error_response(error.status_code, kind, f"{request.method} {request.url.path}: {error.detail}.")

    def guard(request: Request, token: str | None, what: str) -> None:
        check_token(request.headers.get("authorization"), token, what=what)
        if state.limiter is not None:
            state.limiter.check(request.client.host if request.client else "?")

    def one_process(what: str) -> None:
        if state.hub is not None:
            raise RequestError(409, "not_supported", f"{what} is not supported with --workers yet; restart "
                                                     "the server with the new model or config.")

    def admin(request: Request) -> None:
        if state.settings.token is None:
            raise RequestError(403, "forbidden", "admin endpoints are disabled; start the server with --token "
                                                 "(or FRUGALML_ADMIN_TOKEN).")
        guard(request, state.settings.token, "this admin endpoint")

    async def predict_rows(request: Request, parse: Callable[..., np.ndarray], what: str,
                           media: frozenset[str] = _JSON_ONLY,
                           probabilities: bool = False) -> tuple[ServedModel, np.ndarray, list[str]]:
        """Parse, check and predict one request's rows; monitored the same for every protocol.

        With ``probabilities`` the class probabilities (rows x classes) are left in
        ``request.state.probabilities`` (422 for a model that gives none)."""
        guard(request, state.settings.predict_token, what)
        body = await _read_body(request, state.settings, media)
        served, monitor = state.served, state.monitor
        X = parse(body, served.reference, max_rows=state.settings.max_rows)
        X, inputs = (X.codes, X.raw) if isinstance(X, MixedRows) else (X, X)  # monitored / what the model takes
        nan, inf, mask = nonfinite_counts(X)
        if mask is not None:
            if monitor is not None:
                monitor.observe_nonfinite(nan, inf)
            if state.config.nonfinite == "reject":
                raise reject_nonfinite(mask, served.reference.feature_names)
            X = np.where(mask, served.reference.means, X)
            inputs = X if inputs.dtype != object else np.where(mask, X, inputs)
        confidence, challenger = None, state.challenger
        canary = await challenger.canary(inputs) if challenger is not None and not probabilities else None
        try:
            if canary is not None:  # a canary request the challenger answered within its bounded wait
                predictions, request.state.probabilities, predict_s = canary.predictions, None, canary.predict_s
            else:
                wants_confidence = monitor is not None and bool(served.reference.calibration)
                score = _scorer(served.model, probabilities, wants_confidence)
                if state.batcher is not None:  # with others that ask the same model the same thing
                    key = (id(served.model), probabilities, wants_confidence, inputs.dtype.str, inputs.shape[1:])
                    batched = await state.batcher.submit(key, inputs, score)
                    (predictions, confidence, request.state.probabilities), predict_s = batched.outputs, batched.seconds
                else:
                    state.count_model_call()
                    started = time.perf_counter()
                    predictions, confidence, request.state.probabilities = score(inputs)
                    predict_s = time.perf_counter() - started  # the model's own time: what max_predict_ms limits
                if probabilities and predictions is None:
                    raise RequestError(422, "bad_request", "this model gives no class probabilities; ask "
                                                           "without probabilities=true.")
        except RequestError:
            raise
        except FloatingPointError:
            raise RequestError(422, "nonfinite", "input values overflow the model's arithmetic (a value is far "
                                                 "outside the training range); send values of a realistic size.") \
                from None
        except Exception as error:
            logger.exception("the model failed to predict %d rows", len(X))
            raise RequestError(500, "model_error", f"the model failed to predict these rows ({type(error).__name__}; "
                                                   "the server log has the details).") from error
        champion = canary is None  # the SLO is the served version's: a canary's answers are the challenger's
        if monitor is not None and champion:
            monitor.observe_predict(predict_s, len(X))
        ids = monitor.observe(X, predictions, confidence) if monitor is not None \
            else state.ids.record(predictions, keep=False)
        if state.config.enabled:
            state.metrics.rows.inc(len(X))
            if champion:
                state.metrics.observe_predict(predict_s, len(X))
        if challenger is not None:  # note who answered; mirror: hand the rows to the challenger's process
            challenger.after_predict(request.scope, served.version, inputs, np.asarray(predictions), predict_s, ids,
                                     by_challenger=canary is not None)
            served = challenger.served if canary is not None else served
        return served, np.asarray(predictions), ids

    @app.post("/predict", openapi_extra=schema.body(schema.PREDICT, schema.PREDICTED))
    async def predict(request: Request) -> Response:
        """Labels (a classifier) or values; ``?probabilities=true`` adds each row's class probabilities,
        in the order of ``classes``."""
        flag = request.query_params.get("probabilities", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise RequestError(422, "bad_request", f"probabilities must be true or false. Got {flag[:20]!r} instead.")
        wanted = flag in ("true", "1")
        served, predictions, ids = await predict_rows(request, parse_predict, "/predict", probabilities=wanted)
        payload = {"predictions": _jsonable(predictions), "ids": ids, "model_version": served.version}
        if wanted:
            payload["classes"] = _jsonable(np.asarray(served.model.classes_))
            payload["probabilities"] = np.asarray(request.state.probabilities, dtype=np.float64).tolist()
        return Response(json.dumps(payload), media_type=_JSON)

    @app.post("/invocations", openapi_extra=schema.body(schema.MLFLOW, {"type": "object", "properties": {
        "predictions": schema.PREDICTIONS}}, csv=True))
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol, as ``mlflow models serve`` answers it (JSON or CSV)."""
        csv = request.headers.get("content-type", "").split(";")[0].strip().lower() == mlflow_protocol.CSV
        parser = mlflow_protocol.parse_csv if csv else mlflow_protocol.parse_json_body

        def parse(body: bytes, reference: Any, *, max_rows: int) -> Any:
            # predict_rows calls this right after it reads state.served (no await between): the same model
            return parser(body, reference, max_rows=max_rows, signature=mlflow_protocol.signature(state.served.path))

        _, predictions, _ = await predict_rows(request, parse, "/invocations", mlflow_protocol.MEDIA)
        return Response(json.dumps({"predictions": _jsonable(predictions)}), media_type=_JSON)

    @get_and_head("/ping", "MLflow's liveness check: 200 with an empty line, as `mlflow models serve` answers.")
    async def ping() -> Response:
        return Response("\n", media_type=_JSON)

    @get_and_head("/version", "The MLflow version serving the model, as `mlflow models serve` answers.")
    async def scoring_version() -> Response:
        return Response(mlflow_protocol.mlflow_version(), media_type=_JSON)

    _v2_routes(app, state, predict_rows, get_and_head)
    @app.post("/feedback", openapi_extra=schema.body(schema.FEEDBACK, {"type": "object", "properties": {
        "accepted": {"type": "integer"}}}))
    async def feedback(request: Request) -> Response:
        guard(request, state.settings.predict_token, "/feedback")
        data = parse_json(await _read_body(request, state.settings))
        monitor = state.monitor
        if monitor is None:
            raise RequestError(409, "monitoring_disabled", "feedback needs monitoring; it is disabled in the config.")
        if isinstance(monitor, HubLink):
            accepted = await run_in_threadpool(monitor.feedback, data)
        else:
            accepted = accept_feedback(monitor, data)
            if state.challenger is not None:
                state.challenger.feedback(data)  # each version's quality on the same labels
        return Response(json.dumps({"accepted": accepted}), media_type=_JSON)

    @get_and_head("/health")
    async def health() -> dict[str, Any]:
        served = state.served
        slo = await state.slo_health()
        return {
            "status": "ok",
            "model": {"uri": served.uri, "name": served.name, "version": served.version, "task": served.reference.task,
                      "features": list(served.reference.feature_names),
                      "training_sha256": served.reference.training_sha256},
            "monitoring": state.monitor is not None,
            **({} if slo is None else {"slo": slo}),
            **({} if served.reference.has_statistics else {
                "drift": "off: the model has no reference data; serve it with --reference DATA to monitor it"}),
            "uptime_s": round(time.time() - state.started, 3),
        }

    @get_and_head("/challenger", "The challenger compared with the champion on live traffic (404 without one).")
    async def challenger_report() -> dict[str, Any]:
        if state.challenger is None:
            raise RequestError(404, "not_found", "this server has no challenger; start it with --challenger URI "
                                                 "and --mirror or --canary P.")
        return state.challenger.report(state.served)

    @get_and_head("/metrics")
    async def metrics() -> Response:
        if state.hub is not None:  # every worker's counters and the one monitor, from the monitor process
            return Response(await run_in_threadpool(state.hub.scrape), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", openapi_extra=schema.body(schema.RELOAD, required=False))
    async def reload(request: Request) -> dict[str, Any]:
        admin(request)
        one_process("/admin/reload")
        body = await _read_body(request, state.settings)
        data = parse_json(body) if body.strip() else {}
        uri = data.get("model_uri", state.served.uri) if isinstance(data, dict) else None
        if not isinstance(uri, str):
            raise RequestError(422, "bad_request", "body must be empty or {\"model_uri\": \"...\"}.")
        try:
            served = await run_in_threadpool(state.load, uri)
        except FrugalError as error:
            state.metrics.reloads["error"].inc()
            raise RequestError(422, "model_load", str(error)) from None
        except Exception as error:  # MLflow's artifact stores raise what they like for a bad URI
            state.metrics.reloads["error"].inc()
            raise RequestError(422, "model_load", f"cannot load {uri!r}: {type(error).__name__}: {error}") from None
        state.apply(served, state.config)
        state.metrics.reloads["ok"].inc()
        logger.info("reloaded %s (version %s)", served.uri, served.version or "-")
        return {"model_uri": served.uri, "version": served.version,
                "training_sha256": served.reference.training_sha256}

    @get_and_head("/admin/monitoring-config")
    async def get_config(request: Request) -> dict[str, Any]:
        admin(request)
        return state.config.to_dict()

    @app.put("/admin/monitoring-config", openapi_extra=schema.body(schema.CONFIG))
    async def put_config(request: Request) -> dict[str, Any]:
        admin(request)
        one_process("PUT /admin/monitoring-config")
        data = parse_json(await _read_body(request, state.settings))
        if not isinstance(data, dict):
            raise RequestError(422, "bad_config", "the monitoring config must be a JSON object.")
        current = state.config.to_dict()["custom_metrics"]
        if data.setdefault("custom_metrics", current) != current:
            raise RequestError(422, "bad_config", "custom_metrics can only be set at start-up (--config); "
                                                  "leave it out to keep the current ones.")
        data["custom_metrics"] = state.config.custom_metrics
        try:
            config = as_monitoring_config(data)
        except FrugalError as error:
            raise RequestError(422, "bad_config", str(error)) from None
        state.apply(state.served, config)
        logger.info("monitoring config replaced")
        return config.to_dict()

    return app
