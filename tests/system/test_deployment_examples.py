"""The Dockerfile and AKS manifests: consistent with the code, and their command runs as deployed.

No image is built here (no registry is reachable); instead the image's CMD runs on loopback with the
Deployment's environment, the Secret's connection string pointing at Azurite.
"""
from __future__ import annotations

import json
import re
import shlex
import signal
import time

import httpx
import pytest
import yaml

from mdc_middleware import config

from tests.helpers import PYTHON, ROOT, blob_rows, free_port, start_server
from .test_e2e_servers import send_traffic

KNOWN_VARIABLES = {v for variables, _ in config.ENVIRONMENT.values() for v in variables} | {
    "MDC_WORKSPACE", "MDC_MODEL_CONFIG_MAP"}


def dockerfile() -> dict:
    lines = (ROOT / "examples" / "Dockerfile").read_text().splitlines()
    instructions: dict = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.setdefault(keyword, []).append(rest)
    return instructions


def containers(name: str) -> list:
    documents = list(yaml.safe_load_all((ROOT / "examples" / "aks" / name).read_text()))
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]["containers"]


def test_dockerfile_copies_what_exists_and_sets_known_variables():
    image = dockerfile()
    for copy in image["COPY"]:
        *sources, _ = copy.split()
        assert all((ROOT / source).exists() for source in sources), copy
    for env in image["ENV"]:
        names = {pair.split("=", 1)[0] for pair in shlex.split(env)}
        assert names - {"PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"} <= KNOWN_VARIABLES


@pytest.mark.parametrize("manifest", ["deployment.yaml", "workload-identity.yaml"])
def test_manifest_grace_period_covers_prestop_drain_and_flush(manifest):
    pod, [container] = containers(manifest)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= KNOWN_VARIABLES, set(env) - KNOWN_VARIABLES
    prestop = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", " ".join(container["lifecycle"]["preStop"]["exec"]["command"]))[1])
    command = json.loads(dockerfile()["CMD"][0])
    drain = float(command[command.index("--timeout-graceful-shutdown") + 1])
    flush = float(env["MDC_SHUTDOWN_DEADLINE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= prestop + drain + flush
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    if manifest == "workload-identity.yaml":
        assert env["MDC_STORAGE_MANAGED_IDENTITY"] == "true"
        assert env["MDC_STORAGE_ACCOUNT_URL"].startswith("https://")
    else:
        [secret] = [e for e in container["env"] if e["name"] == "MDC_STORAGE_CONNECTION_STRING"]
        assert "secretKeyRef" in secret["valueFrom"]


@pytest.mark.azurite
def test_image_command_runs_with_the_deployment_environment(azurite, container_name, tmp_path):
    _, [container] = containers("deployment.yaml")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(MDC_STORAGE_CONNECTION_STRING=azurite.connection_string, MDC_CONTAINER=container_name,
               MDC_SPOOL_DIR=str(tmp_path / "spool"), MDC_FLUSH_INTERVAL_SECONDS="600")
    command = json.loads(dockerfile()["CMD"][0])
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    process = start_server([PYTHON, "-m", *command], env, port)
    try:
        sent = send_traffic(port, 30)
        metrics = httpx.get(f"http://127.0.0.1:{port}{env['MDC_METRICS_PATH']}").text
        assert "mdc_rows_captured_total" in metrics
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        stopped_in = time.monotonic() - started
    finally:
        process.kill()
    assert process.returncode in (0, -signal.SIGTERM), output.decode()
    assert stopped_in < float(env["MDC_SHUTDOWN_DEADLINE_SECONDS"])
    inputs = blob_rows(azurite, container_name, "inputs")
    assert len(inputs) == len(sent)
    assert set(inputs["$aml_service_name"]) == {"iris-scoring"}
    assert set(inputs["$aml_workspace"]) == {env["MDC_WORKSPACE"]}
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert sorted(map(tuple, inputs[features].values.tolist())) == sorted(tuple(map(repr, r)) for r in sent)
