"""The HTTP prediction API (FastAPI). Thin: it validates, predicts, and hands rows to the monitor.

Endpoints: ``POST /predict``, ``POST /feedback``, ``GET /health``, ``GET /metrics``,
``POST /admin/reload``, ``GET|PUT /admin/monitoring-config``. Every refusal is a 4xx
with a one-line JSON body ``{"error": "...", "kind": "..."}`` (:func:`error_body`; also what
the HTTP layer answers to a request it cannot parse). A ``models:/NAME@ALIAS`` model follows
its alias (:func:`_follow_alias`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
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

from frugalml.exceptions import FrugalError
from frugalml.serve import _schema as schema
from frugalml.serve._config import MonitoringConfig, as_monitoring_config
from frugalml.serve._estimate import confidences
from frugalml.serve._metrics import PREDICT_ENDPOINTS, MonitorCollector, ProcessCollector, ServerMetrics
from frugalml.serve._model import ServedModel, load_model
from frugalml.serve._monitor import Monitor
from frugalml.serve._quality import FeedbackError, PredictionLog
from frugalml.serve._security import RateLimiter, check_token
from frugalml.serve._settings import ServerSettings, registry_alias
from frugalml.serve._validate import (
    RequestError,
    nonfinite_counts,
    parse_json,
    parse_mlflow,
    parse_predict,
    parse_v2,
    reject_nonfinite,
    v2_datatype,
)

logger = logging.getLogger("frugalml.serve")
_JSON = "application/json"
_MONITOR_POLL_S = 0.02  # how often the event loop asks the monitor whether it has work


class _State:
    """What the endpoints share; swapped atomically on reload or reconfiguration."""

    def __init__(self, served: ServedModel, settings: ServerSettings, config: MonitoringConfig,
                 loader: Callable[[str], ServedModel]) -> None:
        self.served = served
        self.settings = settings
        self.config = config
        self.loader = loader
        self.metrics = ServerMetrics()
        self.ids = PredictionLog()
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst) if settings.rate_limit else None
        self.monitor = self._new_monitor(served, config)
        self.started = time.time()
        self.metrics.registry.register(ProcessCollector())
        self.metrics.registry.register(MonitorCollector(lambda: self.served, lambda: self.monitor))

    @staticmethod
    def _new_monitor(served: ServedModel, config: MonitoringConfig) -> Monitor | None:
        if not config.enabled or not served.reference.has_statistics:
            return None  # no training statistics (served without --reference): nothing to monitor against
        return Monitor(served.reference, config, model=served.model, name=served.name or served.uri)

    def apply(self, served: ServedModel, config: MonitoringConfig) -> None:
        old = self.monitor
        if old is not None and served is self.served and config.enabled:
            old.configure(config)
        else:
            self.monitor = self._new_monitor(served, config)
            if old is not None:
                old.stop()
        self.served, self.config = served, config

    def error(self, kind: str) -> None:
        if self.config.enabled:
            self.metrics.errors.labels(kind).inc()


async def _drive_monitor(state: _State) -> None:
    """Run the monitor's processing on the event loop between requests, when it has work.

    A monitor thread would contend with the request path for the GIL, and each hand-over
    can cost a request up to the interpreter's 5 ms switch interval; here a window's
    PSI/KS (~2 ms for 500 rows) simply runs between two requests.
    """
    while True:
        await asyncio.sleep(_MONITOR_POLL_S)
        monitor = state.monitor
        if monitor is not None and monitor.due(time.monotonic()):
            try:
                monitor.process()
            except Exception:  # keep serving whatever one window does
                logger.exception("monitoring failed to process a window")


def _alias_version(tracking_uri: str | None, name: str, alias: str) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return str(client.get_model_version_by_alias(name, alias).version)


def _one_line(error: Exception) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


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
            new = await run_in_threadpool(state.loader, served.uri)
        except Exception as error:  # noqa: BLE001 - the registry's or the model's: keep serving the old one
            state.metrics.reloads["error"].inc()
            message = _one_line(error)
            if message != reported:
                logger.warning("cannot follow %s (still serving version %s): %s", served.uri,
                               served.version or "-", message)
                reported = message
            continue
        reported = None
        if state.served is not served or new.version == served.version:
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

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        metrics = state.metrics if state.config.enabled else None
        status, started = 500, False

        async def send_and_record(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
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
                response = _error_response(500, "internal", f"internal error: {type(error).__name__}: {error}")
                await response(scope, receive, send_and_record)
        finally:
            if metrics is not None:
                elapsed = time.perf_counter() - start
                endpoint = metrics.endpoint(scope["path"])
                metrics.in_flight.dec()
                metrics.observe(endpoint, status, elapsed)
                if state.monitor is not None:
                    state.monitor.observe_request(elapsed if endpoint in PREDICT_ENDPOINTS else None, status < 400)


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


async def _read_body(request: Request, settings: ServerSettings) -> bytes:
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
        _check_json(request)
    return bytes(body)


def _check_json(request: Request) -> None:
    """A body must say it is JSON: a cross-site form post (form-encoded, text/plain) is refused."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise RequestError(415, "unsupported_media_type",
                           f"send the body as JSON with Content-Type: application/json (got {media or 'none'!r}).")


def _jsonable(predictions: np.ndarray) -> list[Any]:
    values = predictions.tolist()
    if predictions.dtype.kind == "f" and not np.isfinite(predictions).all():
        return [v if math.isfinite(v) else None for v in values]
    return values


def create_app(served: ServedModel, settings: ServerSettings | None = None, config: Any = None, *,
               loader: Callable[[str], ServedModel] | None = None) -> FastAPI:
    """Build the app for ``served``; ``config`` defaults to the model's stored monitoring config."""
    settings = settings or ServerSettings()
    config = as_monitoring_config(config if config is not None else served.monitoring)
    state = _State(served, settings, config, loader or (lambda uri: load_model(uri, settings.tracking_uri, settings.reference)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        interval = settings.poll_interval(state.served.uri)
        tasks = [asyncio.create_task(_drive_monitor(state)),
                 *([asyncio.create_task(_follow_alias(state, interval))] if interval else [])]
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(title="frugalml serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.frugalml = state
    app.add_middleware(_Instrumentation, state=state)

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

    def admin(request: Request) -> None:
        if state.settings.token is None:
            raise RequestError(403, "forbidden", "admin endpoints are disabled; start the server with --token "
                                                 "(or FRUGALML_ADMIN_TOKEN).")
        guard(request, state.settings.token, "this admin endpoint")

    async def predict_rows(request: Request, parse: Callable[..., np.ndarray], what: str
                           ) -> tuple[ServedModel, np.ndarray, list[str]]:
        """Parse, check and predict one request's rows; monitored the same for every protocol."""
        guard(request, state.settings.predict_token, what)
        body = await _read_body(request, state.settings)
        served, monitor = state.served, state.monitor
        X = parse(body, served.reference, max_rows=state.settings.max_rows)
        nan, inf, mask = nonfinite_counts(X)
        if mask is not None:
            if monitor is not None:
                monitor.observe_nonfinite(nan, inf)
            if state.config.nonfinite == "reject":
                raise reject_nonfinite(mask, served.reference.feature_names)
            X = np.where(mask, served.reference.means, X)
        confidence = None
        try:
            with np.errstate(over="raise"):
                scored = confidences(served.model, X) if monitor is not None and served.reference.calibration \
                    else None  # one predict_proba gives the predictions and their confidence (CBPE)
                predictions, confidence = scored if scored is not None else (served.model.predict(X), None)
        except FloatingPointError:
            raise RequestError(422, "nonfinite", "input values overflow the model's arithmetic (a value is far "
                                                 "outside the training range); send values of a realistic size.") \
                from None
        except Exception as error:
            raise RequestError(500, "model_error", f"the model failed to predict: {type(error).__name__}: {error}") \
                from error
        ids = monitor.observe(X, predictions, confidence) if monitor is not None \
            else state.ids.record(predictions, keep=False)
        if state.config.enabled:
            state.metrics.rows.inc(len(X))
        return served, np.asarray(predictions), ids

    @app.post("/predict", openapi_extra=schema.body(schema.PREDICT, schema.PREDICTED))
    async def predict(request: Request) -> Response:
        served, predictions, ids = await predict_rows(request, parse_predict, "/predict")
        payload = {"predictions": _jsonable(predictions), "ids": ids, "model_version": served.version}
        return Response(json.dumps(payload), media_type=_JSON)

    @app.post("/invocations", openapi_extra=schema.body(schema.MLFLOW, {"type": "object", "properties": {
        "predictions": schema.PREDICTIONS}}))
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol, as ``mlflow models serve`` answers it."""
        _, predictions, _ = await predict_rows(request, parse_mlflow, "/invocations")
        return Response(json.dumps({"predictions": _jsonable(predictions)}), media_type=_JSON)

    def v2_model(name: str) -> ServedModel:
        served = state.served
        if name not in (served.name or "model", "model"):
            raise RequestError(404, "not_found", f"no model {name[:60]!r} here; this server serves "
                                                 f"{served.name or 'model'!r}.")
        return served

    @app.api_route("/v2/health/ready", methods=["GET", "HEAD"])
    @app.api_route("/v2/health/live", methods=["GET", "HEAD"])
    async def v2_health() -> dict[str, Any]:
        return {"live": True, "ready": True}

    @app.api_route("/v2/models/{name}", methods=["GET", "HEAD"])
    async def v2_metadata(name: str) -> dict[str, Any]:
        served = v2_model(name)
        features = served.reference.feature_names
        return {"name": served.name or "model", "versions": [served.version] if served.version else [],
                "platform": "mlflow", "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(features)]},
                                                 *({"name": f, "datatype": "FP64", "shape": [-1]} for f in features)],
                "outputs": [{"name": "predictions", "datatype": "FP64" if served.reference.task == "regression"
                             else "BYTES", "shape": [-1]}]}

    @app.api_route("/v2/models/{name}/ready", methods=["GET", "HEAD"])
    async def v2_ready(name: str) -> dict[str, Any]:
        v2_model(name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", openapi_extra=schema.body(schema.V2_INFER))
    async def v2_infer(name: str, request: Request) -> Response:
        """The Open Inference Protocol v2 (KServe); the prediction ids are in ``parameters``."""
        v2_model(name)
        served, predictions, ids = await predict_rows(request, parse_v2, "/v2/models/{name}/infer")
        output = {"name": "predictions", "shape": [len(predictions)], "datatype": v2_datatype(predictions),
                  "data": _jsonable(predictions)}
        payload = {"model_name": served.name or "model", "model_version": served.version,
                   "outputs": [output], "parameters": {"prediction_ids": ids}}
        return Response(json.dumps(payload), media_type=_JSON)

    @app.post("/feedback", openapi_extra=schema.body(schema.FEEDBACK, {"type": "object", "properties": {
        "accepted": {"type": "integer"}}}))
    async def feedback(request: Request) -> Response:
        guard(request, state.settings.predict_token, "/feedback")
        data = parse_json(await _read_body(request, state.settings))
        monitor = state.monitor
        if monitor is None:
            raise RequestError(409, "monitoring_disabled", "feedback needs monitoring; it is disabled in the config.")
        items = data if isinstance(data, list) else [data]
        resolved = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
                raise RequestError(422, "bad_feedback", f"item {i}: feedback needs 'prediction_id' and 'label' "
                                                        "(and optionally 'slice': {key: value}).")
            try:
                prediction = monitor.log.get(item["prediction_id"])
                monitor.quality.score(prediction, item["label"])
                monitor.quality.check_slice(item.get("slice"))
            except FeedbackError as error:
                raise RequestError(422, "bad_feedback", f"item {i}: {error}") from None
            resolved.append(item)
        try:  # all items checked: only a full slice table can refuse one now
            for item in resolved:
                monitor.feedback(item["prediction_id"], item["label"], item.get("slice"))
        except FeedbackError as error:
            raise RequestError(422, "bad_feedback", str(error)) from None
        return Response(json.dumps({"accepted": len(resolved)}), media_type=_JSON)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        served = state.served
        return {
            "status": "ok",
            "model": {"uri": served.uri, "name": served.name, "version": served.version, "task": served.reference.task,
                      "features": list(served.reference.feature_names),
                      "training_sha256": served.reference.training_sha256},
            "monitoring": state.monitor is not None,
            **({} if served.reference.has_statistics else {
                "drift": "off: the model has no reference data; serve it with --reference DATA to monitor it"}),
            "uptime_s": round(time.time() - state.started, 3),
        }

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", openapi_extra=schema.body(schema.RELOAD, required=False))
    async def reload(request: Request) -> dict[str, Any]:
        admin(request)
        body = await _read_body(request, state.settings)
        data = parse_json(body) if body.strip() else {}
        uri = data.get("model_uri", state.served.uri) if isinstance(data, dict) else None
        if not isinstance(uri, str):
            raise RequestError(422, "bad_request", "body must be empty or {\"model_uri\": \"...\"}.")
        try:
            served = await run_in_threadpool(state.loader, uri)
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

    @app.api_route("/admin/monitoring-config", methods=["GET", "HEAD"])
    async def get_config(request: Request) -> dict[str, Any]:
        admin(request)
        return state.config.to_dict()

    @app.put("/admin/monitoring-config", openapi_extra=schema.body(schema.CONFIG))
    async def put_config(request: Request) -> dict[str, Any]:
        admin(request)
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
