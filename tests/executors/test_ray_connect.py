"""A Ray address that accepts connections but is no Ray cluster is one line within seconds
(``ray.init`` alone retries for minutes); no cluster is started here."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra: pip install 'frugalml[ray]'")

from helpers import cli, write_study  # noqa: E402

STUDY = """
[study]
name = "ray-address"
workers = 1
directory = "out"
backend = "ray"

[[workloads]]
train = "trainers:steady"
train_kwargs = { steps = 40, step_s = 0.002 }
eval_every = 20
name = "steady"

[search]
method = "grid"
space = { optimizer = ["adam", "sgd"] }
"""


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("listener", ["never answers", "speaks HTTP"])
def test_an_address_that_is_not_a_ray_cluster_is_one_line_within_seconds(listener, tmp_path):
    if listener == "never answers":
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        port, close = hole.getsockname()[1], hole.close
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]

        def close() -> None:
            server.shutdown()
            server.server_close()
    study_file = write_study(tmp_path / "s.toml", STUDY)
    try:
        started = time.monotonic()
        result = cli("tune", str(study_file), "--address", f"127.0.0.1:{port}", timeout=60)
        took = time.monotonic() - started
    finally:
        close()
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("frugalml: error: Cannot reach a Ray cluster at")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ("no answer within 5 s" if listener == "never answers" else "not as a Ray cluster") in result.stderr
    assert took < 10 + 5, f"{took:.1f} s"  # the CLI's own start (Ray's import) plus the 5 s probe, at most
    assert not (tmp_path / "out" / "frugalml.db").exists()
