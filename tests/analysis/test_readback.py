"""Readback through the Python API and the `mdc` CLI, on the local layout and on Azurite."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import mdc_middleware
from mdc_middleware import ModelDataCollector, collector
from mdc_middleware.analysis import read_collected
from mdc_middleware.analysis.join import drop_redelivered, join_predictions
from mdc_middleware.cli import main
from mdc_middleware.records.record import CORRELATION_ID

from tests.helpers import ROOT, blob_rows

FEATURES = ["a", "b", "city"]
DAYS = [dt.date(2026, 3, 30), dt.date(2026, 3, 31), dt.date(2026, 4, 1)]


def collect_on_days(settings, monkeypatch, *, requests_per_day=20, days=DAYS, model="m", version="1"):
    """Score a little model on several days through ModelDataCollector; returns what was sent."""
    settings = settings.replace(model_version=version)
    inputs = ModelDataCollector(model, designation="inputs", feature_names=FEATURES, settings=settings)
    predictions = ModelDataCollector(model, designation="predictions", feature_names=["score"], settings=settings)
    rng = np.random.default_rng(7)
    sent = []
    for day in days:
        noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp()
        monkeypatch.setattr(collector, "time", types.SimpleNamespace(time=lambda noon=noon: noon))
        for request in range(requests_per_day):
            n = 1 + request % 3
            batch = pd.DataFrame({"a": rng.normal(size=n).round(3), "b": rng.integers(0, 9, n),
                                  "city": rng.choice(["Oslo", "Lima, Peru", 'say "hi"'], n)})
            if request == 0:
                batch = pd.concat([batch.iloc[:1]] * 2, ignore_index=True)  # two equal rows: data, kept
            correlations = inputs.collect(batch)
            scores = batch["a"] * 2
            predictions.collect(predictions.add_correlations(scores.to_numpy(), correlations))
            sent.append((day, batch, scores))
    monkeypatch.undo()
    mdc_middleware.flush(10)
    return sent


def runner() -> CliRunner:
    """stdout apart from stderr (progress, counts): click 8.2 keeps them apart, 8.1 only when asked."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click 8.2 has no such argument
        return CliRunner()


def invoke(*args: str) -> str:
    result = runner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ls_lists_models_versions_designations_and_days(settings, data_dir, monkeypatch):
    collect_on_days(settings, monkeypatch)
    collect_on_days(settings, monkeypatch, days=DAYS[:1], version="2")
    listed = [json.loads(line) for line in invoke("--data", str(data_dir), "ls", "--json").splitlines()]
    summary = {(e["version"], e["designation"]): (e["first_day"], e["last_day"], e["days"]) for e in listed}
    assert summary == {
        ("1", "inputs"): ("2026-03-30", "2026-04-01", 3), ("1", "predictions"): ("2026-03-30", "2026-04-01", 3),
        ("2", "inputs"): ("2026-03-30", "2026-03-30", 1), ("2", "predictions"): ("2026-03-30", "2026-03-30", 1)}
    table = invoke("--data", str(data_dir), "ls", "--version", "2")
    assert "2026-03-30" in table and " 1 " in table and "2026-04-01" not in table


def test_read_selects_by_date_range_and_version_with_cells_as_written(settings, data_dir, monkeypatch):
    sent = collect_on_days(settings, monkeypatch)
    collect_on_days(settings, monkeypatch, version="2")
    out = invoke("--data", str(data_dir), "read", "inputs", "--version", "1", "--from", "2026-03-31",
                 "--to", "2026-04-01")
    frame = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    expected = pd.concat([batch for day, batch, _ in sent if day >= DAYS[1]], ignore_index=True)
    assert len(frame) == len(expected) == 2 * 40  # 39 rows a day, plus the repeated row of request 0
    assert frame["city"].tolist() == expected["city"].tolist()  # commas and quotes round-trip
    assert frame["a"].tolist() == [repr(v) for v in expected["a"]]
    assert set(frame["$aml_model_version"]) == {"1"}
    assert frame["$aml_dc_scoring_timestamp"].str[:10].isin(["2026-03-31", "2026-04-01"]).all()
    api = read_collected(data_dir, "inputs", version="1", start=DAYS[1], end=DAYS[2], as_text=True)
    pd.testing.assert_frame_equal(frame, api)


@pytest.mark.parametrize("start,end,first", [
    (dt.datetime(2026, 3, 31, 8), dt.datetime(2026, 4, 1, 23, 59), "2026-03-31"),   # naive: taken as UTC
    ("2026-03-31", "2026-04-01", "2026-03-31"),
    (pd.Timestamp("2026-03-31T01:00:00+02:00"), np.datetime64("2026-04-01"), "2026-03-30"),  # 23:00 UTC
    (dt.datetime(2026, 3, 31, 2, tzinfo=dt.timezone(dt.timedelta(hours=3))), "2026-04-01T10:00:00Z", "2026-03-30"),
], ids=["naive-datetime", "text", "aware-timestamp-and-datetime64", "aware-datetime-and-iso-text"])
def test_the_date_range_takes_datetimes_timestamps_and_text_as_utc_days(settings, data_dir, monkeypatch, start, end,
                                                                        first):
    """Anything but a date used to raise a TypeError inside the comparison; an aware time is a UTC day."""
    collect_on_days(settings, monkeypatch, requests_per_day=2)
    days = sorted(set(read_collected(data_dir, "inputs", start=start, end=end, as_text=True)
                      ["$aml_dc_scoring_timestamp"].str[:10]))
    assert days == sorted({first, "2026-03-31", "2026-04-01"})
    with pytest.raises(ValueError, match="start"):
        read_collected(data_dir, "inputs", start="last tuesday")


def test_read_writes_parquet_with_types(settings, data_dir, monkeypatch, tmp_path):
    sent = collect_on_days(settings, monkeypatch, days=DAYS[:1])
    target = tmp_path / "inputs.parquet"
    invoke("--data", str(data_dir), "read", "inputs", "-o", str(target))
    frame = pd.read_parquet(target)
    expected = pd.concat([batch for _, batch, _ in sent], ignore_index=True)
    np.testing.assert_allclose(frame["a"].to_numpy(), expected["a"].to_numpy())
    assert frame["b"].tolist() == expected["b"].tolist()


def test_join_pairs_inputs_with_predictions_and_removes_redeliveries(settings, data_dir, monkeypatch):
    sent = collect_on_days(settings, monkeypatch, days=DAYS[:1])
    # A spooled batch replayed after a crash lands again later in the file: append the first two
    # records (4 rows: the two equal rows of request 0 and the two rows of request 1) once more.
    [inputs_file] = [p for p in data_dir.rglob("data.csv") if "/inputs/" in p.as_posix()]
    lines = inputs_file.read_text().splitlines(keepends=True)
    with open(inputs_file, "a") as out:
        out.writelines(lines[1:5])
    out = invoke("--data", str(data_dir), "join")
    joined = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    expected = pd.concat([batch.assign(score=scores) for _, batch, scores in sent], ignore_index=True)
    assert len(joined) == len(expected)
    assert joined["a"].tolist() == [repr(v) for v in expected["a"]]
    assert joined["score"].tolist() == [repr(v) for v in expected["score"]]
    assert (joined["a"].astype(float) * 2 - joined["score"].astype(float)).abs().max() < 1e-9

    result = runner().invoke(main, ["--data", str(data_dir), "join", "-o", "-"])
    assert "4 redelivered rows removed; 0 inputs without a prediction; 0 predictions without an input" in result.stderr


def test_drop_redelivered_keeps_equal_rows_of_one_request():
    frame = pd.DataFrame({"x": [1, 1, 7, 1, 1, 5, 1], CORRELATION_ID: list("aazaaba")})
    kept, removed = drop_redelivered(frame)
    assert removed == 2  # the second run of "a" repeats the first exactly
    assert kept["x"].tolist() == [1, 1, 7, 5, 1]  # the last "a" run differs: it is data


def test_join_counts_unmatched_rows():
    inputs = pd.DataFrame({"x": [1, 2, 3], CORRELATION_ID: ["a", "a", "b"]})
    predictions = pd.DataFrame({"y": [10, 20, 99], CORRELATION_ID: ["a", "a", "c"]})
    result = join_predictions(inputs, predictions, how="left")
    assert result.frame[["x", "y"]].fillna(-1).values.tolist() == [[1, 10], [2, 20], [3, -1]]
    assert (result.unmatched_inputs, result.unmatched_predictions) == (1, 1)


def test_dask_reads_the_seed_glob_and_gets_the_rows_mdc_read_gets(settings, data_dir, monkeypatch):
    import dask.dataframe as dd

    collect_on_days(settings, monkeypatch)
    service = next(data_dir.rglob("inputs")).parent
    frame = dd.read_csv(str(service / "inputs" / "2026" / "*" / "*" / "data.csv"), dtype=str,
                        keep_default_na=False).compute()
    frame = frame.sort_values([CORRELATION_ID, "$aml_dc_scoring_timestamp"], kind="stable").reset_index(drop=True)
    ours = pd.read_csv(io.StringIO(invoke("--data", str(data_dir), "read", "inputs")), dtype=str,
                       keep_default_na=False)
    ours = ours.sort_values([CORRELATION_ID, "$aml_dc_scoring_timestamp"], kind="stable").reset_index(drop=True)
    assert len(ours) > 100
    assert list(frame.columns) == list(ours.columns)
    assert frame.astype(object).values.tolist() == ours.astype(object).values.tolist()


def test_tail_prints_rows_as_they_arrive(settings, data_dir, monkeypatch):
    collect_on_days(settings, monkeypatch, days=[dt.date.today()], requests_per_day=3)  # already there
    process = subprocess.Popen(
        [sys.executable, "-m", "mdc_middleware.cli", "--data", str(data_dir), "tail", "inputs", "--interval",
         "0.2", "--duration", "20", "--max-rows", "30"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)  # let it take its starting offsets
        dc = ModelDataCollector("m", designation="inputs", feature_names=FEATURES,
                                settings=settings.replace(model_version="1"))
        for i in range(30):
            dc.collect([[i, i * 2, f"town {i}, with a comma"]])
            if i % 10 == 9:
                mdc_middleware.flush(10)
                time.sleep(0.5)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    frame = pd.read_csv(io.BytesIO(out), dtype=str, keep_default_na=False)
    assert frame["a"].tolist() == [str(i) for i in range(30)]
    assert frame["city"].tolist() == [f"town {i}, with a comma" for i in range(30)]


def test_tail_started_before_any_data_waits_for_the_folder_and_prints_the_first_rows(settings, data_dir):
    """Started with the service, before its first flush made the data folder: it said "no collected data folder"
    and quit. Now it waits, says so, and prints every row that lands."""
    assert not data_dir.exists()
    process = subprocess.Popen(
        [sys.executable, "-m", "mdc_middleware.cli", "--data", str(data_dir), "tail", "inputs", "--interval",
         "0.2", "--duration", "20", "--max-rows", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        dc = ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings)
        dc.collect([[i] for i in range(5)])
        mdc_middleware.flush(10)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert b"no collected data folder at" in err and b"yet; waiting for it" in err
    assert pd.read_csv(io.BytesIO(out), dtype=str)["x"].tolist() == ["0", "1", "2", "3", "4"]


def test_tail_stops_at_max_rows_even_inside_one_poll(settings, data_dir, monkeypatch):
    """--max-rows 4 printed every row the first poll found: all 14 of two days, here."""
    sent = collect_on_days(settings, monkeypatch, days=DAYS[:2], requests_per_day=3)
    out = invoke("--data", str(data_dir), "tail", "inputs", "--from-start", "--max-rows", "4", "--duration", "10",
                 "--interval", "0.1")
    frame = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    expected = pd.concat([batch for _, batch, _ in sent], ignore_index=True)
    assert len(expected) > 4 and frame["city"].tolist() == expected["city"].tolist()[:4]


def test_drift_flags_a_shifted_day_and_writes_html_and_json(settings, data_dir, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    baseline = pd.DataFrame({"a": rng.normal(0, 1, 2000), "b": rng.integers(0, 9, 2000),
                             "city": rng.choice(["Oslo", "Lima"], 2000, p=[0.7, 0.3])})
    baseline.to_csv(tmp_path / "train.csv", index=False)
    dc = ModelDataCollector("m", designation="inputs", feature_names=FEATURES, settings=settings)
    for day, shift, oslo in ((DAYS[0], 0.0, 0.7), (DAYS[1], 3.0, 0.1)):
        noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp()
        monkeypatch.setattr(collector, "time", types.SimpleNamespace(time=lambda noon=noon: noon))
        dc.collect(pd.DataFrame({"a": rng.normal(shift, 1, 1000), "b": rng.integers(0, 9, 1000),
                                 "city": rng.choice(["Oslo", "Lima"], 1000, p=[oslo, 1 - oslo])}))
    mdc_middleware.flush(10)
    args = ["--data", str(data_dir), "drift", "--baseline", str(tmp_path / "train.csv"),
            "--html", str(tmp_path / "report.html"), "--json", str(tmp_path / "drift.json")]

    calm = runner().invoke(main, args + ["--to", "2026-03-30"])
    assert calm.exit_code == 0, calm.output
    assert json.loads((tmp_path / "drift.json").read_text())["overall"]["magnitude"] < 10

    drifted = runner().invoke(main, args)
    assert drifted.exit_code == 3, drifted.output
    summary = json.loads((tmp_path / "drift.json").read_text())
    days = {d["label"]: d for d in summary["days"]}
    assert days["2026-03-30"]["magnitude"] < 10 < 40 < days["2026-03-31"]["magnitude"]
    features = {f["feature"]: f for f in days["2026-03-31"]["features"]}
    assert features["a"]["ks_statistic"] > 0.8 and features["a"]["psi"] > 1
    assert features["a"]["wasserstein"] == pytest.approx(3.0, abs=0.2)
    assert features["city"]["kind"] == "categorical" and features["city"]["chi2_pvalue"] < 1e-6
    assert features["b"]["psi"] < 0.1
    assert summary["drifted"] is True and set(summary["drifted_features"]) == {"a", "city"}
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3 and "DRIFT" in report


def test_drift_without_collected_rows_is_a_clear_error(data_dir, tmp_path):
    data_dir.mkdir(parents=True)
    pd.DataFrame({"a": [1.0]}).to_csv(tmp_path / "train.csv", index=False)
    result = runner().invoke(main, ["--data", str(data_dir), "drift", "--baseline", str(tmp_path / "train.csv")])
    assert result.exit_code == 1 and "no collected data in" in result.stderr


def test_missing_data_folder_is_a_clear_error(tmp_path, monkeypatch):
    result = runner().invoke(main, ["--data", str(tmp_path / "nope"), "ls"])
    assert result.exit_code == 1 and "no collected data folder" in result.stderr
    # Without --data and without storage, the default folder: where it came from, and how to point elsewhere.
    monkeypatch.chdir(tmp_path)
    for name in ("MDC_LOCAL_DIR", "MDC_STORAGE_CONNECTION_STRING", "AML_MODEL_DC_STORAGE", "MDC_STORAGE_ACCOUNT_URL"):
        monkeypatch.delenv(name, raising=False)
    result = runner().invoke(main, ["ls"])
    assert result.exit_code == 1 and result.stderr.strip() == (
        "Error: no collected data folder at 'mdc-data' (MDC_LOCAL_DIR or its default: no storage is configured); "
        "give the folder with --data DIR, or blob storage with --connection-string or --account-url")


@pytest.mark.azurite
def test_cli_reads_joins_and_tails_a_blob_container(azurite, blob_settings, container_name, monkeypatch):
    sent = collect_on_days(blob_settings, monkeypatch, days=DAYS[:2])
    expected = blob_rows(azurite, container_name, "inputs")
    base = ["--connection-string", azurite.connection_string, "--container", container_name]
    listed = [json.loads(line) for line in invoke(*base, "ls", "--json").splitlines()]
    assert {(e["designation"], e["days"]) for e in listed} == {("inputs", 2), ("predictions", 2)}
    frame = pd.read_csv(io.StringIO(invoke(*base, "read", "inputs")), dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(frame, expected)
    joined = pd.read_csv(io.StringIO(invoke(*base, "join", "--from", "2026-03-31")), dtype=str,
                         keep_default_na=False)
    day_two = pd.concat([b.assign(score=s) for day, b, s in sent if day == DAYS[1]], ignore_index=True)
    assert joined["score"].tolist() == [repr(v) for v in day_two["score"]]

    monkeypatch.setenv("MDC_STORAGE_CONNECTION_STRING", azurite.connection_string)  # the pod's own settings
    monkeypatch.setenv("MDC_CONTAINER", container_name)
    out = runner().invoke(main, ["tail", "inputs", "--from-start", "--duration", "0"]).stdout
    assert pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False).equals(expected)


@pytest.mark.azurite
def test_cli_reads_a_container_with_a_sas_token(azurite, blob_settings, container_name, monkeypatch):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from tests.azurite import ACCOUNT, KEY

    collect_on_days(blob_settings, monkeypatch, days=DAYS[:1], requests_per_day=5)
    expected = blob_rows(azurite, container_name, "predictions")
    sas = generate_container_sas(ACCOUNT, container_name, account_key=KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    out = invoke("--account-url", azurite.account_url, "--sas-token", sas, "--container", container_name,
                 "read", "predictions")
    frame = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(frame, expected)
    assert len(frame) == 1 + sum(1 + r % 3 for r in range(5))  # request 0 repeats its row


def test_where_the_data_is_may_be_given_after_the_command_too(azurite, blob_settings, container_name, data_dir,
                                                               settings, monkeypatch):
    """`mdc read inputs --data DIR` failed with "No such option: --data": only `mdc --data DIR read` worked."""
    collect_on_days(settings, monkeypatch, days=DAYS[:1], requests_per_day=3)
    before = invoke("--data", str(data_dir), "read", "inputs")
    assert before and invoke("read", "inputs", "--data", str(data_dir)) == before
    assert "inputs" in invoke("ls", "--data", str(data_dir))
    collect_on_days(blob_settings, monkeypatch, days=DAYS[:1], requests_per_day=2)
    in_blob = invoke("read", "predictions", "--connection-string", azurite.connection_string,
                     "--container", container_name)
    assert in_blob == invoke("--connection-string", azurite.connection_string, "--container", container_name,
                             "read", "predictions") != invoke("read", "predictions", "--data", str(data_dir))


def test_carriage_returns_in_cells_names_and_ids_read_back_exactly(settings, data_dir, tmp_path):
    """A bare "\r" is a line break to pandas, Excel and Spark: it must be quoted wherever it is written
    (cells, column names, ids; the csv path and the numbers fast path), and in what `mdc read` writes."""
    names = ["plain", "name\rwith cr"]
    texts = ModelDataCollector("m", designation="inputs", feature_names=names, settings=settings)
    numbers = ModelDataCollector("m", designation="inputs", feature_names=names, settings=settings)
    cells = [["mid\rdle", "end\r"], ["two\r\rcr", "crlf\r\nx"], ["\r", "ok"]]
    texts.collect(cells, user_correlation_id="user\rid")
    numbers.collect([[1.5, 2], [3, 4.25]], user_correlation_id="user\rid")  # rows of plain numbers
    assert mdc_middleware.flush(10)
    expected = [["mid\rdle", "end\r"], ["two\r\rcr", "crlf\r\nx"], ["'\r", "ok"],  # "\r" first: neutralised
                ["1.5", "2"], ["3", "4.25"]]

    def check(frame: pd.DataFrame) -> None:
        assert list(frame.columns[:2]) == names
        assert frame[names].values.tolist() == expected
        assert all(value.startswith("user\rid-") for value in frame[CORRELATION_ID])

    check(read_collected(data_dir, "inputs", as_text=True))
    files = list(data_dir.rglob("*.csv"))
    assert len(files) == 1
    check(pd.read_csv(files[0], dtype=str, keep_default_na=False))  # the file itself, by a plain reader
    exported = tmp_path / "export.csv"
    invoke("--data", str(data_dir), "read", "inputs", "-o", str(exported))
    check(pd.read_csv(exported, dtype=str, keep_default_na=False))
    result = runner().invoke(main, ["--data", str(data_dir), "read", "inputs"], catch_exceptions=False)
    printed = result.stdout_bytes.decode()  # (its .stdout turns every "\r\n" into "\n")
    check(pd.read_csv(io.StringIO(printed), dtype=str, keep_default_na=False))
    assert exported.read_bytes().decode() == printed
    assert printed.count("\n") == 6 + 1 and printed.count("\r\n") == 1  # rows end in "\n"; one cell has "\r\n"


def test_rows_printed_to_stdout_are_the_utf8_bytes_of_the_export_whatever_the_consoles_encoding(
        settings, data_dir, tmp_path):
    """A console or pipe on Windows may encode as cp1252 (here: ASCII): printing a city of Tokyo must not fail,
    and what is printed must be the bytes `-o` writes."""
    dc = ModelDataCollector("m", designation="inputs", feature_names=["city"], settings=settings)
    dc.collect([["Zürich"], ["東京"], ["line\r\nbreak"]])
    mdc_middleware.flush(10)
    exported = tmp_path / "export.csv"
    invoke("--data", str(data_dir), "read", "inputs", "-o", str(exported))
    printed = subprocess.run([sys.executable, "-m", "mdc_middleware.cli", "--data", str(data_dir), "read", "inputs"],
                             cwd=ROOT, capture_output=True, timeout=60, env=dict(os.environ, PYTHONIOENCODING="ascii"))
    assert printed.returncode == 0, printed.stderr.decode(errors="replace")
    assert printed.stdout == exported.read_bytes()
    frame = pd.read_csv(io.BytesIO(printed.stdout), dtype=str, keep_default_na=False)
    assert frame["city"].tolist() == ["Zürich", "東京", "line\r\nbreak"]


def test_join_where_nothing_joins_says_so_and_fails(settings, data_dir):
    """Inputs and predictions collected outside any request: an id per call, so nothing can join."""
    inputs = ModelDataCollector("m", designation="inputs", settings=settings)
    predictions = ModelDataCollector("m", designation="predictions", settings=settings)
    for i in range(3):
        inputs.collect([[i]])
        predictions.collect([[i]])
    mdc_middleware.flush(10)
    result = runner().invoke(main, ["--data", str(data_dir), "join", "-o", "-"])
    assert result.exit_code == 1
    assert "no input joined a prediction" in result.stderr and "3 inputs without a prediction" in result.stderr


@pytest.fixture
def small_collection(settings, data_dir):
    collector = ModelDataCollector("iris", designation="inputs", feature_names=["zip", "x"], settings=settings)
    for i in range(50):
        collector.collect([["00501", i * 0.1]])
    mdc_middleware.flush(10)
    return data_dir


@pytest.mark.parametrize("args,code,message", [
    (["read", "input"], 1, "no designation 'input' in"),
    (["read", "inputs", "--model", "irs"], 1, "no model 'irs' in"),
    (["read", "inputs", "--version", "2"], 1, "no version '2' in"),
    (["ls", "--designation", "input"], 1, "there is: inputs"),
    (["read", "inputs", "--from", "2026-12-07", "--to", "2026-12-01"], 2, "is after --to"),
    (["read", "inputs", "-o", "x.xlsx"], 2, "CSV (.csv) or Parquet (.parquet)"),
])
def test_cli_typos_and_impossible_requests_fail_saying_what_exists(small_collection, args, code, message):
    result = runner().invoke(main, ["--data", str(small_collection), *args])
    assert result.exit_code == code, result.output
    assert message in (result.stderr if code else result.output) or message in result.output


def test_days_that_hold_no_rows_read_nothing_and_say_which_days_do(small_collection):
    """An empty answer for --from/--to must not read as "no traffic" when the data is on other days."""
    today = dt.datetime.now(dt.timezone.utc).date()
    later = f"{today + dt.timedelta(days=2):%Y-%m-%d}"
    said = f"(--from {later}: inputs was collected on {today})"
    read = runner().invoke(main, ["--data", str(small_collection), "read", "inputs", "--from", later])
    assert read.exit_code == 0 and read.stdout == "" and read.stderr.strip() == f"0 rows {said}"
    join = runner().invoke(main, ["--data", str(small_collection), "join", "--from", later])
    assert join.exit_code == 0 and join.stderr.strip().endswith(said)
    assert runner().invoke(main, ["--data", str(small_collection), "read", "inputs"]).stderr == "50 rows\n"


@pytest.mark.parametrize("filters,message", [
    (dict(designation="input"), "no designation 'input' in {}; there is: inputs. Nothing read"),
    (dict(designation="inputs", model="irs"), "no model 'irs' in {}; there is: iris. Nothing read"),
    (dict(designation="inputs", version=2), "no version '2' in {}; there is: default. Nothing read"),
])
def test_a_name_nowhere_in_the_data_reads_nothing_and_warns_naming_what_there_is(small_collection, filters,
                                                                                message):
    """The Python API gave an empty frame for read_collected(d, "input") and said nothing; the CLI says what there is."""
    with pytest.warns(UserWarning) as warned:
        frame = read_collected(small_collection, **filters)
    assert frame.empty and [str(w.message) for w in warned] == [message.format(small_collection)]


def test_no_data_yet_and_days_without_data_read_nothing_without_a_warning(small_collection, data_dir, tmp_path):
    import warnings

    (tmp_path / "empty").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_collected(tmp_path / "empty", "inputs").empty
        assert read_collected(small_collection, "inputs", start="2001-01-01", end="2001-01-02").empty
        assert len(read_collected(small_collection, "inputs", model="iris")) == 50


def test_a_data_folder_that_does_not_exist_is_an_error_not_an_empty_frame(tmp_path):
    from mdc_middleware.analysis import inventory, list_data_files

    for read in (read_collected, inventory, list_data_files):
        with pytest.raises(FileNotFoundError, match="no collected data folder at"):
            read(tmp_path / "mdc-dta")


def test_drift_with_nothing_to_compare_is_an_error_not_ok(small_collection, tmp_path):
    (tmp_path / "base.csv").write_text("q,r\n1,2\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.csv").write_text("zip,x\n")
    (tmp_path / "case.csv").write_text("ZIP,X\n00501,2.5\n")
    (tmp_path / "excel-de.csv").write_text("zip;x\n00501;2,5\n")  # what a spreadsheet in German saves
    (tmp_path / "latin-1.csv").write_bytes("zip,x,city\n00501,2.5,Zürich\n".encode("latin-1"))
    (tmp_path / "table.parquet").write_text("zip,x\n00501,2.5\n")  # CSV under a Parquet name
    for baseline, message in (("base.csv", "share no feature"), ("binary.csv", "not a readable CSV"),
                              ("excel-de.csv", "one column named 'zip;x': the file is separated by ';', not commas"),
                              ("latin-1.csv", "not UTF-8 text (a byte 0xfc); save it as CSV UTF-8"),
                              ("table.parquet", "not a readable CSV or Parquet file"),
                              ("empty.csv", "the baseline has no rows"),
                              ("case.csv", "share no feature with values; these differ only in case: ZIP and zip, "
                                           "X and x")):
        result = runner().invoke(main, ["--data", str(small_collection), "drift", "--baseline",
                                        str(tmp_path / baseline)])
        assert result.exit_code == 2, (baseline, result.output)
        assert message in result.stderr and "Traceback" not in result.output


def test_drift_says_which_baseline_features_it_did_not_compare(small_collection, tmp_path):
    """A baseline column the collected data lacks was left out of "0 of 1 features drifted" without a word."""
    (tmp_path / "base.csv").write_text("ZIP,x,extra\n00501,2.5,1\n00501,0.5,2\n")
    result = runner().invoke(main, ["--data", str(small_collection), "drift", "--baseline", str(tmp_path / "base.csv")])
    assert result.exit_code in (0, 3), result.output
    assert result.output.rstrip().endswith(". Not compared: ZIP (not in the collected data; zip differs only in "
                                           "case), extra (not in the collected data)")


def test_a_storage_failure_is_one_line_naming_where_and_why():
    from tests.helpers import free_port

    port = free_port()
    connection = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                  f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    result = runner().invoke(main, ["--connection-string", connection, "read", "inputs"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "connection refused" in lines[0], result.stderr


def test_parquet_keeps_every_value_as_collected(settings, data_dir, tmp_path):
    """Leading zeros, a version like 1.10, empty request ids, and the timestamp as a UTC time."""
    collector = ModelDataCollector("m", designation="inputs", feature_names=["zip", "x", "n"],
                                   settings=settings.replace(model_version="1.10"))
    collector.collect([["00501", 1.5, 3], ["02134", 0.1, None]])
    mdc_middleware.flush(10)
    out = tmp_path / "x.parquet"
    result = runner().invoke(main, ["--data", str(data_dir), "read", "inputs", "-o", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["zip"].tolist() == ["00501", "02134"]
    assert frame["x"].tolist() == [1.5, 0.1]
    assert frame["n"].tolist()[0] == 3 and pd.isna(frame["n"].tolist()[1])
    assert set(frame["$aml_model_version"]) == {"1.10"} and set(frame["$aml_request_id"]) == {""}
    assert str(frame["$aml_dc_scoring_timestamp"].dtype).startswith("datetime64") and \
        str(frame["$aml_dc_scoring_timestamp"].dt.tz) == "UTC"
    assert frame["$aml_dc_boundary"].tolist() == [1440, 1440]


def collect_with_labels(settings, labelled_by_key=False):
    """40 one-row requests over two days; the model is right on the first day, wrong on half the second."""
    inputs = ModelDataCollector("m", designation="inputs", feature_names=["loan", "x"], settings=settings)
    predictions = ModelDataCollector("m", designation="predictions", feature_names=["approved"], settings=settings)
    labels = ModelDataCollector("m", designation="labels", feature_names=["loan", "outcome"] if labelled_by_key
                                else ["outcome"], settings=settings)
    for i in range(40):
        day = 0 if i < 20 else 1
        with mock_time(dt.datetime(2026, 11, 2 + day, 12, tzinfo=dt.timezone.utc).timestamp() + i):
            ids = inputs.collect([[f"L{i:03d}", i]])
            predictions.collect(predictions.add_correlations([["yes" if i % 2 else "no"]], ids))
        truth = ("yes" if i % 2 else "no") if day == 0 or i % 4 < 2 else ("no" if i % 2 else "yes")
        if labelled_by_key:
            labels.collect([[f"L{i:03d}", truth]])
        else:
            labels.collect(labels.add_correlations([[truth]], ids))
    mdc_middleware.flush(10)


def mock_time(epoch):
    from unittest import mock

    return mock.patch("time.time", return_value=epoch)


@pytest.mark.parametrize("by_key", [False, True])
def test_quality_per_day_from_labels_collected_later(settings, data_dir, by_key):
    collect_with_labels(settings, labelled_by_key=by_key)
    args = ["--data", str(data_dir), "quality", "--json", "-"] + (["--key", "loan", "--label", "outcome"] if by_key
                                                                   else [])
    result = runner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["task"] == "classification" and summary["joined_rows"] == 40
    assert [d["label"] for d in summary["days"]] == ["2026-11-02", "2026-11-03"]
    assert summary["days"][0]["metrics"]["accuracy"] == 1.0
    assert summary["days"][1]["metrics"]["accuracy"] == 0.5
    assert summary["overall"]["metrics"]["accuracy"] == 0.75


def test_quality_with_two_prediction_columns_says_how_to_name_one(settings, data_dir):
    """A new build adds a score beside the answer: quality cannot guess which column to score, and says which
    option picks it."""
    collect_with_labels(settings)
    more = ModelDataCollector("m", designation="predictions", feature_names=["approved", "score"], settings=settings)
    more.collect([["yes", 0.9]])
    mdc_middleware.flush(10)
    refused = runner().invoke(main, ["--data", str(data_dir), "quality"])
    assert refused.exit_code == 1
    assert ("the predictions have 2 data columns (approved, score): name the prediction column (prediction=… in "
            "Python, --prediction with mdc quality)") in refused.stderr
    named = runner().invoke(main, ["--data", str(data_dir), "quality", "--prediction", "approved", "--json", "-"])
    assert named.exit_code == 0 and json.loads(named.stdout)["overall"]["metrics"]["accuracy"] == 0.75


def test_quality_of_a_regression_and_when_nothing_joins(settings, data_dir):
    from mdc_middleware.analysis.quality import model_quality

    predictions = pd.DataFrame({"y": [1.0, 2.0, 4.0], CORRELATION_ID: ["a", "b", "c"],
                                "$aml_dc_scoring_timestamp": ["2026-11-02T00:00:00Z"] * 3})
    labels = pd.DataFrame({"truth": [1.5, 2.0, 3.0], CORRELATION_ID: ["a", "b", "c"]})
    result = model_quality(pd.DataFrame(), predictions, labels)
    assert result.task == "regression"
    assert result.overall.metrics == pytest.approx({"mae": 0.5, "rmse": (1.25 / 3) ** 0.5, "bias": 1 / 6})
    with pytest.raises(ValueError, match="no prediction joined a label"):
        model_quality(pd.DataFrame(), predictions, labels.assign(**{CORRELATION_ID: ["x", "y", "z"]}))
    with pytest.raises(ValueError, match=r"no labels collected \(designation 'labels'\): once the truth is known, "
                                         r"collect it with ModelDataCollector\(<model>, designation='labels'\)"):
        model_quality(pd.DataFrame(), predictions, pd.DataFrame())


def test_the_report_leads_with_a_verdict_that_agrees_with_its_features(tmp_path):
    from mdc_middleware.analysis.drift import compute_drift
    from mdc_middleware.analysis.report import render_html

    rng = np.random.default_rng(0)
    baseline = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.normal(0, 1, 500)})
    shifted = pd.DataFrame({"a": rng.normal(1.5, 1, 500), "b": rng.normal(1.5, 1, 500),
                            "$aml_dc_scoring_timestamp": "2026-11-02T00:00:00Z"})
    result = compute_drift(baseline, shifted)
    assert result.drifted and result.drifted_features == ["a", "b"] and result.overall.magnitude < 100
    page = render_html(result, about={"model": "iris", "version": "1", "source": "mdc-data"})
    verdict_at, table_at = page.index("DRIFT: 2 of 2 features drifted"), page.index("<table>")
    assert verdict_at < table_at  # the verdict first
    for fact in ("<dt>model</dt><dd>iris</dd>", "<dt>version</dt><dd>1</dd>", "<dt>generated</dt>",
                 "2026-11-02 to 2026-11-02", "What to do", "How to read it", "&ge; 0.2"):
        assert fact in page, fact
    assert "chi²" not in page and "e-0" not in page.split("<img")[0]  # no empty columns, no 1.024e-05
    calm = compute_drift(baseline, baseline.sample(frac=1, random_state=1))
    assert not calm.drifted and "No drift: 0 of 2 features drifted" in render_html(calm)


def test_drift_of_predictions_as_well_as_inputs(settings, data_dir, tmp_path):
    """A model that starts answering 'yes' to everyone: its predictions drift while its inputs do not."""
    inputs = ModelDataCollector("m", designation="inputs", feature_names=["x"], settings=settings)
    predictions = ModelDataCollector("m", designation="predictions", feature_names=["answer"], settings=settings)
    rng = np.random.default_rng(3)
    for value in rng.normal(0, 1, 300):
        ids = inputs.collect([[float(value)]])
        predictions.collect(predictions.add_correlations([["yes"]], ids))
    mdc_middleware.flush(10)
    pd.DataFrame({"x": rng.normal(0, 1, 300)}).to_csv(tmp_path / "inputs.csv", index=False)
    pd.DataFrame({"answer": ["yes", "no"] * 150}).to_csv(tmp_path / "predictions.csv", index=False)
    calm = runner().invoke(main, ["--data", str(data_dir), "drift", "--baseline", str(tmp_path / "inputs.csv")])
    assert calm.exit_code == 0, calm.output
    shifted = runner().invoke(main, ["--data", str(data_dir), "drift", "--designation", "predictions",
                                     "--baseline", str(tmp_path / "predictions.csv")])
    assert shifted.exit_code == 3 and "DRIFT: 1 of 1 features drifted (answer)" in shifted.output, shifted.output


def test_the_reports_distributions_come_in_the_order_of_its_table(monkeypatch):
    """A reader goes down the table and then the plots: the worst feature first in both."""
    from mdc_middleware.analysis import report
    from mdc_middleware.analysis.drift import compute_drift

    rng = np.random.default_rng(3)
    baseline = pd.DataFrame({name: rng.normal(0, 1, 2000) for name in ("calm", "shift", "spread")})
    collected = pd.DataFrame({"calm": rng.normal(0, 1, 2000), "shift": rng.normal(0.7, 1, 2000),
                              "spread": rng.normal(0, 2.5, 2000), "$aml_dc_scoring_timestamp": "2026-11-02T00:00:00Z"})
    result = compute_drift(baseline, collected)
    psi, distance = ({f.feature: getattr(f, name) for f in result.overall.features} for name in ("psi", "distance"))
    assert psi["spread"] > psi["shift"] and distance["spread"] < distance["shift"]  # the two orders differ
    titles = []
    drawn = report._png
    monkeypatch.setattr(report, "_png", lambda figure: titles.append(
        [axis.get_title().split("\n")[0] for axis in figure.axes if axis.get_title()]) or drawn(figure))
    page = report.render_html(result)
    table = re.findall(r"<tr[^>]*><td>(\w+)</td><td>numeric</td>", page.split("Features over the whole range")[1])
    assert result.drifted_features == ["shift", "spread"]
    assert titles[-1] == table[:3] == ["spread", "shift", "calm"]  # drifted, by PSI; then the others


def test_a_feature_of_many_categories_shows_those_whose_share_moved(monkeypatch):
    """80 stores, ten of them now taking most of the traffic: those ten are among the bars drawn, whatever the
    baseline's most frequent stores were."""
    from mdc_middleware.analysis import report
    from mdc_middleware.analysis.drift import compute_drift

    rng = np.random.default_rng(1)
    stores = [f"store_{i:03d}" for i in range(80)]
    weights = np.ones(80)
    weights[:10] = 8
    baseline = pd.DataFrame({"store": rng.choice(stores, 5000)})
    collected = pd.DataFrame({"store": rng.choice(stores, 5000, p=weights / weights.sum()),
                              "$aml_dc_scoring_timestamp": "2026-11-02T00:00:00Z"})
    result = compute_drift(baseline, collected)
    assert result.drifted_features == ["store"]
    drawn = {}
    keep = report._png
    monkeypatch.setattr(report, "_png", lambda figure: drawn.update(
        {axis.get_title().split("\n")[0]: axis for axis in figure.axes}) or keep(figure))
    report.render_html(result)
    axis = drawn["store"]
    shown = [label.get_text() for label in axis.get_xticklabels()]
    assert len(shown) == 15 and set(stores[:10]) <= set(shown)
    assert axis.get_xlabel() == "the 15 of 80 categories whose share moved most"


def test_text_the_writer_neutralised_is_compared_as_collected(settings, data_dir, tmp_path):
    """A category "-" (a placeholder for none) and "+1 sale" are written "'-" and "'+1 sale" (formula neutralising,
    the default): drift against training data that holds "-" must see the same categories, not new ones."""
    rng = np.random.default_rng(4)
    categories = ["-", "+1 sale", "@web", "store"]
    collector = ModelDataCollector("m", designation="inputs", feature_names=["channel"], settings=settings)
    sent = rng.choice(categories, 2000).tolist()
    for start in range(0, 2000, 100):
        collector.collect([[value] for value in sent[start:start + 100]])
    assert mdc_middleware.flush(10)
    assert set(read_collected(data_dir, "inputs", as_text=True)["channel"]) == {"'-", "'+1 sale", "'@web", "store"}
    assert read_collected(data_dir, "inputs")["channel"].tolist() == sent
    baseline = tmp_path / "train.csv"
    pd.DataFrame({"channel": rng.choice(categories, 2000)}).to_csv(baseline, index=False)
    result = runner().invoke(main, ["--data", str(data_dir), "drift", "--baseline", str(baseline)])
    assert result.exit_code == 0 and result.stdout.startswith("no drift: 0 of 1 features drifted"), result.output


def test_join_to_parquet_gives_text_as_collected_and_to_csv_as_written(settings, data_dir, tmp_path):
    inputs = ModelDataCollector("m", designation="inputs", feature_names=["channel"], settings=settings)
    predictions = ModelDataCollector("m", designation="predictions", feature_names=["label"], settings=settings)
    correlation = inputs.collect([["-"], ["=x"], ["store"]])
    predictions.collect(predictions.add_correlations([["+1 sale"], ["@web"], ["ok"]], correlation))
    assert mdc_middleware.flush(10)
    invoke("--data", str(data_dir), "join", "-o", str(tmp_path / "joined.parquet"))
    joined = pd.read_parquet(tmp_path / "joined.parquet")
    assert joined["channel"].tolist() == ["-", "=x", "store"] and joined["label"].tolist() == ["+1 sale", "@web", "ok"]
    invoke("--data", str(data_dir), "join", "-o", str(tmp_path / "joined.csv"))
    written = pd.read_csv(tmp_path / "joined.csv", dtype=str)
    assert written["channel"].tolist() == ["'-", "'=x", "store"]  # neutralised for spreadsheets


def test_mdc_drift_names_a_feature_that_stopped_arriving_and_its_report_says_why(settings, data_dir, tmp_path):
    """A new model build stops sending "tenure": the day's rows go on in a data_1.csv without it. `mdc drift`
    raised KeyError on such a day; the values of the rows that had it are unchanged, and the drift is in the
    rows without it, named in the summary and in the report."""
    from mdc_middleware.analysis import report

    rng = np.random.default_rng(6)
    before = ModelDataCollector("churn", designation="inputs", feature_names=["age", "tenure"], settings=settings)
    after = ModelDataCollector("churn", designation="inputs", feature_names=["age"], settings=settings)
    before.collect(rng.normal(40, 10, (200, 2)).round(1))
    mdc_middleware.flush(10)
    after.collect(rng.normal(40, 10, (300, 1)).round(1))
    mdc_middleware.flush(10)
    assert sorted(p.name for p in data_dir.rglob("data*.csv")) == ["data.csv", "data_1.csv"]
    baseline = tmp_path / "train.csv"
    pd.DataFrame(rng.normal(40, 10, (1000, 2)), columns=["age", "tenure"]).to_csv(baseline, index=False)
    page = tmp_path / "report.html"
    done = runner().invoke(main, ["--data", str(data_dir), "drift", "--baseline", str(baseline), "--html", str(page)])
    assert done.exit_code == 3, done.output
    assert "DRIFT: 1 of 2 features drifted (tenure: no number in 60% of rows, 0% in the baseline)" in done.output
    html_text = page.read_text()
    assert "rows without a number 0% &rarr; 60%" in html_text
    assert re.findall(r"<tr class='drift'><td>(\w+)</td>", html_text)[0] == "tenure"
    assert "<td>age</td><td>numeric</td><td>500</td><td>no</td>" in html_text


def test_the_report_of_a_feature_without_any_value_draws_no_empty_plot(tmp_path):
    from mdc_middleware.analysis.drift import compute_drift
    from mdc_middleware.analysis.report import render_html

    rng = np.random.default_rng(2)
    baseline = pd.DataFrame({"x": rng.normal(0, 1, 500), "y": rng.normal(0, 1, 500)})
    collected = pd.DataFrame({"x": [""] * 200, "y": rng.normal(0, 1, 200).astype(str),
                              "$aml_dc_scoring_timestamp": "2026-11-02T00:00:00Z"})
    page = render_html(compute_drift(baseline, collected))
    assert "rows without a number 0% &rarr; 100%" in page and "nan" not in page.lower().split("<img")[0]
    assert page.count("<img") == 3  # magnitude, PSI per day, and the one feature with values


def test_collected_rows_saved_as_csv_are_a_baseline_that_does_not_drift_from_themselves(settings, data_dir, tmp_path):
    """Last month's rows as the reference: `mdc read -o base.csv` keeps cells as written, a neutralising quote in
    front of '-' or '=SUM(A1)', and drift against the very same rows said DRIFT (magnitude 35.8)."""
    collector = ModelDataCollector("m", designation="inputs", feature_names=["cat", "x"], settings=settings)
    rng = np.random.default_rng(0)
    for _ in range(300):
        collector.collect([[str(rng.choice(["-", "=SUM(A1)", "+44 20", "ok"])), float(rng.normal())]])
    mdc_middleware.flush(10)
    base = tmp_path / "base.csv"
    assert runner().invoke(main, ["--data", str(data_dir), "read", "inputs", "-o", str(base)]).exit_code == 0
    assert "'-" in base.read_text(encoding="utf-8")  # as written, for spreadsheets
    result = runner().invoke(main, ["--data", str(data_dir), "drift", "--baseline", str(base), "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["overall"]["magnitude"] == 0.0
