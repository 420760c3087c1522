"""What watching a service costs per request: the central app under uvicorn with the
observability middleware (request id, access log line, latency histogram) against the
same app with it taken out, measured in the same run, and /ready (cached) and /metrics
against /health. Prints p50 and p95 of each and the ratios; asserts nothing.

    python benchmarks/observability_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

from spe.app import create_central_app
from spe.db.migrate import upgrade
from spe.observability.logging import log_handler
from spe.observability.middleware import ObservabilityMiddleware
from spe.settings import Settings

TOKEN = "benchmark-metrics-token-0123456789"


def _app(tmp: Path, *, observed: bool):
    url = f"sqlite:///{tmp / 'central.db'}"
    upgrade(url, "central")
    app = create_central_app(Settings(data_dir=tmp, database_url=url,
                                      environment="development", metrics_token=TOKEN))
    if not observed:
        app.user_middleware = [m for m in app.user_middleware
                               if m.cls is not ObservabilityMiddleware]
    return app


def _times(client: httpx.Client, path: str, n: int, headers: dict | None = None) -> list[float]:
    for _ in range(20):  # warm up the connection and the caches
        client.get(path, headers=headers)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        resp = client.get(path, headers=headers)
        out.append((time.perf_counter() - start) * 1000)
        assert resp.status_code in (200, 503), resp.status_code
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def _serve(port: int, data: Path, observed: bool) -> None:
    """The server process: the app under uvicorn, access lines written (JSON, to memory)
    as in production at INFO."""
    root = logging.getLogger()
    root.addHandler(log_handler("json", io.StringIO()))
    root.setLevel(logging.INFO)
    uvicorn.run(_app(data, observed=observed), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def _start(data: Path, observed: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--data",
                             str(data), *([] if observed else ["--plain"])],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/health").status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.data, not args.plain)
        return
    results: dict[str, list[float]] = {}
    for observed in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            proc, base = _start(Path(tmp), observed)
            try:
                with httpx.Client(base_url=base) as client:
                    # The catalogue's list: a route the access log writes at INFO.
                    results["catalogue" if observed else "catalogue, no middleware"] = _times(
                        client, "/api/v1/catalogue", args.requests)
                    if observed:
                        results["health"] = _times(client, "/health", args.requests)
                        results["ready (cached)"] = _times(client, "/ready", args.requests)
                        results["metrics"] = _times(client, "/metrics", args.requests // 4,
                                                    {"Authorization": f"Bearer {TOKEN}"})
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    base_times = results["catalogue, no middleware"]
    print(f"{'request':28} {'p50 ms':>8} {'p95 ms':>8} {'p50 ratio':>10}")
    for name, values in results.items():
        print(f"{name:28} {_p(values, 50):8.2f} {_p(values, 95):8.2f} "
              f"{_p(values, 50) / _p(base_times, 50):10.2f}")
    print("ratio: against GET /api/v1/catalogue without the middleware, same run")


if __name__ == "__main__":
    main()
