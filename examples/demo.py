"""The demo: a FastAPI iris scoring service on loopback, real traffic, and the files it collected.

    python examples/demo.py [--requests 200] [--dir mdc-data] [--report-dir mdc-report]

Then it reads the data back with the ``mdc`` CLI: what is stored, inputs joined with predictions,
and a drift report of the traffic against the model's training data.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--dir", default="mdc-data", help="where the local sink writes")
    parser.add_argument("--report-dir", default="mdc-report", help="where the joined rows and drift report go")
    args = parser.parse_args()

    port = free_port()
    env = dict(os.environ, MDC_ENABLED="true", MDC_LOCAL_DIR=str(Path(args.dir).resolve()),
               MDC_FLUSH_INTERVAL_SECONDS="1", MDC_WEBSERVICE_NAME="iris-demo",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/healthz", server)
        rng = random.Random(7)
        rows_sent = 0
        with httpx.Client(base_url=base, timeout=10.0) as client:
            for _ in range(args.requests):
                batch = [[round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1),
                          round(rng.uniform(1, 7), 1), round(rng.uniform(0.1, 2.5), 1)]
                         for _ in range(rng.randint(1, 5))]
                response = client.post("/score", json={"data": batch})
                response.raise_for_status()
                rows_sent += len(batch)
        print(f"sent {args.requests} requests with {rows_sent} rows to {base}/score")
    finally:
        server.send_signal(signal.SIGTERM)  # the lifespan shutdown flushes the queue
        server.wait(timeout=60)

    files = sorted(Path(args.dir).rglob("*.csv"))
    print(f"\ncollected files under {args.dir}/:")
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        print(f"  {path}  ({len(lines) - 1} rows)")
        for line in lines[:3]:
            print(f"      {line}")
    if not files:
        raise SystemExit("nothing was collected")
    read_back(Path(args.dir), Path(args.report_dir))


def read_back(data: Path, reports: Path) -> None:
    """What a data scientist does next, with the same CLI they would use."""
    import pandas as pd
    from sklearn.datasets import load_iris

    sys.path.insert(0, str(ROOT))
    from examples.iris_model import FEATURES

    reports.mkdir(parents=True, exist_ok=True)
    baseline = reports / "iris-train.csv"
    pd.DataFrame(load_iris().data, columns=FEATURES).to_csv(baseline, index=False)
    mdc = [sys.executable, "-m", "mdc_middleware.cli", "--data", str(data)]
    steps = [["ls"], ["join", "-o", str(reports / "joined.csv")],
             ["drift", "--baseline", str(baseline), "--html", str(reports / "drift-report.html"),
              "--json", str(reports / "drift.json")]]
    for step in steps:
        print(f"\n$ mdc --data {data} {' '.join(step)}", flush=True)
        code = subprocess.run(mdc + step, cwd=ROOT).returncode
        if code not in (0, 3):  # 3: drift over the threshold, a finding rather than a failure
            raise SystemExit(f"mdc {step[0]} failed with exit code {code}")
    print(f"\nopen {reports / 'drift-report.html'} for the drift report")


if __name__ == "__main__":
    main()
