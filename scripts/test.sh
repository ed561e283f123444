#!/usr/bin/env bash
# Install everything (Python package with dev extras, PySpark included; Azurite from npm; Azure ML's scoring
# server; a Java runtime if there is none) and run the test suite.
# Azurite is started by the tests themselves on a free loopback port and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
AZURITE_VERSION="3.37.0"

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[dev]"

if [ ! -x .tools/azurite/node_modules/.bin/azurite-blob ] \
   || ! grep -q "\"version\": \"$AZURITE_VERSION\"" .tools/azurite/node_modules/azurite/package.json 2>/dev/null; then
  mkdir -p .tools/azurite
  npm install --silent --no-audit --no-fund --prefix .tools/azurite "azurite@$AZURITE_VERSION" >/dev/null
fi
export MDC_AZURITE_BIN="$PWD/.tools/azurite/node_modules/.bin/azurite-blob"

# Microsoft's own scoring server, for the drop-in tests (tests/system/test_served_request.py), in a venv of its own:
# it pins Flask, pydantic and OpenTelemetry versions the dev extra need not share.
AZMLINFSRV_VERSION="1.5.1"
if ! .tools/azmlinfsrv/bin/python -m pip show azureml-inference-server-http 2>/dev/null | grep -q "^Version: $AZMLINFSRV_VERSION$"; then
  python3 -m venv .tools/azmlinfsrv
  .tools/azmlinfsrv/bin/python -m pip install -q "azureml-inference-server-http==$AZMLINFSRV_VERSION" -e . >/dev/null
fi

# A Java runtime for PySpark's local mode (tests/system/test_spark.py), from Debian where there is none.
if ! command -v java >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    if ! apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1; then
      apt-get update -q >/dev/null && apt-get install -y -q openjdk-17-jre-headless >/dev/null
    fi
  else
    echo "no Java runtime: the Spark tests are skipped (install openjdk-17-jre-headless)" >&2
  fi
fi

status=0
# Two workers (pytest-xdist): the system tests mostly wait on servers, outages and deadlines. Spark's tests share
# one worker and one Spark session. "-n 0" after the script's name runs everything in this process.
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
