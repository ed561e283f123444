"""``mdc``: list, read, join, follow and check drift of collected data from the command line.

The storage is found the way the collector finds it (MDC_STORAGE_* and MDC_LOCAL_DIR), or from
``--data`` / ``--connection-string`` / ``--account-url`` with ``--sas-token`` or ``--managed-identity``.
Needs the ``cli`` extra (click, tqdm); ``drift`` needs the ``analysis`` extra (scipy, matplotlib).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

try:
    import click
except ImportError:  # pragma: no cover - exercised only without the extra
    sys.exit("the mdc command needs its extra: pip install 'mdc-middleware[cli]'")

import pandas as pd

from .config import ConfigError, Settings
from .analysis.chunks import Chunk, header_columns, iter_chunks
from .analysis.read import absent_name, as_collected, inventory, text_columns_noted
from .analysis.source import describe_source, open_source

EXIT_DRIFT = 3


class _NotCompared(click.ClickException):
    """Nothing could be compared: no verdict (exit 2), never "no drift"."""

    exit_code = 2
_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _day(value: Optional[dt.datetime]) -> Optional[dt.date]:
    return value.date() if value is not None else None


def _filters(function):
    """--model/--version/--from/--to, shared by the commands that select rows."""
    for option in reversed([
        click.option("--model", help="Model name."),
        click.option("--version", "version", help="Model version."),
        click.option("--from", "start", type=_DATE, help="First day (YYYY-MM-DD, UTC), inclusive."),
        click.option("--to", "end", type=_DATE, help="Last day (YYYY-MM-DD, UTC), inclusive."),
    ]):
        function = option(function)
    return function


class _Context:
    def __init__(self, data: Optional[str] = None, overrides: Optional[dict] = None) -> None:
        self.data, self.overrides = data, dict(overrides or {})
        self._source: Any = None
        self._notes: Dict[str, Optional[set]] = {}

    @property
    def source(self) -> Any:
        if self._source is None:
            try:
                settings = None if self.data else Settings.from_env(**self.overrides)
                self._source = open_source(settings, path=self.data)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            except FileNotFoundError as exc:
                if self.data:
                    raise click.ClickException(str(exc)) from None
                raise click.ClickException(f"{exc} (MDC_LOCAL_DIR or its default: no storage is configured); give "
                                           f"the folder with --data DIR, or blob storage with --connection-string "
                                           f"or --account-url") from None
        return self._source

    def chunks(self, designation: str, model: Optional[str], version: Optional[str], start: Any, end: Any, *,
               shown: bool = True, jsonl_as_text: bool = True) -> Iterator[Chunk]:
        """The rows a chunk at a time (memory bounded by a chunk); ``shown``: with a progress bar."""
        from tqdm import tqdm

        if start is not None and end is not None and start > end:
            raise click.UsageError(f"--from {start:%Y-%m-%d} is after --to {end:%Y-%m-%d}")

        def progress(files):
            return tqdm(files, desc=f"reading {designation}", unit="file", file=sys.stderr, disable=None)

        return iter_chunks(self.source, designation, model=model, version=version, start=_day(start), end=_day(end),
                           jsonl_as_text=jsonl_as_text, progress=progress if shown else None)

    def notes(self, folder: str) -> Optional[set]:
        """The writer's notes on text columns in ``folder`` (read once per folder)."""
        if folder not in self._notes:
            self._notes[folder] = text_columns_noted(self.source, [folder])
        return self._notes[folder]

    def days_collected(self, designation: str, model: Optional[str], version: Optional[str], start: Any,
                       end: Any) -> str:
        """When ``--from``/``--to`` left no rows: the days there are, so that an empty answer is not read as no
        traffic (" (--from 2026-12-09: inputs was collected from 2026-11-30 to 2026-12-08)"); "" otherwise."""
        if start is None and end is None:
            return ""
        entries = inventory(self.source, model=model, version=version, designation=designation)
        asked = " ".join(f"--{flag} {value:%Y-%m-%d}" for flag, value in (("from", start), ("to", end)) if value)
        if not entries:
            return f" ({asked}: no {designation} rows on any day)"
        first, last = min(e.first_day for e in entries), max(e.last_day for e in entries)
        span = f"on {first}" if first == last else f"from {first} to {last}"
        return f" ({asked}: {designation} was collected {span})"

    def check_names(self, designation: Optional[str], model: Optional[str], version: Optional[str]) -> None:
        """A designation, model or version that is nowhere in the data is a typo: say what there is (exit 1)."""
        entries = inventory(self.source)
        where = describe_source(self.source)
        if not entries:
            raise click.ClickException(f"no collected data in {where}")
        absent = absent_name([(e.designation, e.model, e.version) for e in entries], designation, model, version,
                             where)
        if absent is not None:
            raise click.ClickException(absent)


def _take_source_option(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Where the data is: noted on the one context the commands share, whether given before the command
    (``mdc --data d read``) or after it (``mdc read inputs --data d``, as one tends to type it)."""
    if value is None:
        return
    context = ctx.find_object(_Context) or ctx.ensure_object(_Context)
    if param.name == "data":
        context.data = value
    else:
        context.overrides[_SETTING_OF_OPTION[param.name]] = value


_SETTING_OF_OPTION = {"connection_string": "storage_connection_string", "account_url": "storage_account_url",
                      "sas_token": "storage_sas_token", "managed_identity": "storage_managed_identity",
                      "container": "container"}


def _source_options(function):
    """--data, --connection-string, --account-url, --sas-token, --managed-identity, --container."""
    take = dict(expose_value=False, callback=_take_source_option)
    for option in reversed([
        click.option("--data", type=click.Path(file_okay=False),
                     help="A local data folder (the local sink's MDC_LOCAL_DIR).", **take),
        click.option("--connection-string", help="Storage connection string [MDC_STORAGE_CONNECTION_STRING].",
                     **take),
        click.option("--account-url", help="https://<account>.blob.core.windows.net [MDC_STORAGE_ACCOUNT_URL].",
                     **take),
        click.option("--sas-token", help="SAS token for --account-url [MDC_STORAGE_SAS_TOKEN].", **take),
        click.option("--managed-identity", is_flag=True, default=None, help="Use managed / workload identity.",
                     **take),
        click.option("--container", help="Blob container [MDC_CONTAINER], default modeldata.", **take),
    ]):
        function = option(function)
    return function


class _Group(click.Group):
    """Storage and file errors end in one line saying what happened and what to check (``--debug``: the
    traceback); a missing extra names its pip command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(_explain(exc, ctx.find_object(_Context))) from None


def _explain(exc: Exception, context: Optional["_Context"]) -> str:
    where = describe_source(context._source) if context is not None and context._source is not None else "storage"
    if isinstance(exc, ModuleNotFoundError):
        extra = "analysis" if exc.name in ("scipy", "matplotlib") else "cli"
        return f"this needs {exc.name}: pip install 'mdc-middleware[{extra}]'"
    from azure.core.exceptions import AzureError, ResourceNotFoundError  # a core dependency

    if isinstance(exc, ResourceNotFoundError) and "ContainerNotFound" in str(getattr(exc, "error_code", "")):
        return f"{where}: the container does not exist; check MDC_CONTAINER (or the container in --account-url)"
    if isinstance(exc, AzureError):
        from .storage.blob import describe

        return (f"could not read {where}: {describe(exc)}. Check the account URL or connection string, the "
                "key or SAS (it needs read and list), and that the storage is reachable. --debug shows more.")
    if isinstance(exc, OSError):
        return f"could not read {where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc} (--debug shows the traceback)"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_source_options
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Read back what mdc-middleware (or Azure ML's ModelDataCollector) collected."""
    ctx.ensure_object(_Context)


@main.command("ls")
@_source_options
@click.option("--model", help="Model name.")
@click.option("--version", "version", help="Model version.")
@click.option("--designation", help="inputs, predictions, …")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.pass_obj
def ls_command(context: _Context, model: Optional[str], version: Optional[str], designation: Optional[str],
               as_json: bool) -> None:
    """Models, versions, designations and the days present."""
    entries = inventory(context.source, model=model, version=version, designation=designation)
    if not entries and (model or version or designation):
        context.check_names(designation, model, version)
    if as_json:
        for entry in entries:
            row = dict(entry.__dict__, first_day=entry.first_day.isoformat(), last_day=entry.last_day.isoformat())
            click.echo(json.dumps(row))
        return
    if not entries:
        click.echo(f"no collected data in {describe_source(context.source)}", err=True)
        return
    table = pd.DataFrame([entry.__dict__ for entry in entries])
    click.echo(table.to_string(index=False))


OUTPUTS = (".csv", ".parquet")


def _check_output(output: Optional[str]) -> None:
    """Before any reading: an output the command cannot write is a usage error."""
    if output not in (None, "-") and not str(output).lower().endswith(OUTPUTS):
        raise click.UsageError(f"-o {output}: the output is written as CSV (.csv) or Parquet (.parquet); "
                               "'-' or none for CSV on stdout")


@main.command("read")
@_source_options
@click.argument("designation")
@_filters
@click.option("-o", "--output", help="File to write (.csv or .parquet); stdout when absent.")
@click.pass_obj
def read_command(context: _Context, designation: str, model: Optional[str], version: Optional[str],
                 start: Any, end: Any, output: Optional[str]) -> None:
    """Rows of one designation, every data*.csv of each day, as CSV or Parquet."""
    from .analysis.export import typed_frames

    _check_output(output)
    filters = dict(model=model, version=version, start=start, end=end)
    if output and output.lower().endswith(".parquet"):
        if not header_columns(context.source, designation, model=model, version=version, start=_day(start),
                              end=_day(end)):
            context.check_names(designation, model, version)
        passes = [0]

        def chunks():  # a progress bar on the first pass only
            passes[0] += 1
            return context.chunks(designation, **filters, shown=passes[0] == 1, jsonl_as_text=False)

        rows = _parquet(typed_frames(chunks, context.notes), output)
    else:
        columns = header_columns(context.source, designation, model=model, version=version, start=_day(start),
                                 end=_day(end))
        if not columns:
            context.check_names(designation, model, version)
        rows = _csv((c.frame for c in context.chunks(designation, **filters)), columns, output)
    click.echo(f"{rows} rows" + ("" if rows else context.days_collected(designation, model, version, start, end)),
               err=True)


def _csv(frames: Any, columns: list, output: Optional[str]) -> int:
    """CSV of the frames under one header, to ``output`` or stdout: UTF-8 whatever the console's encoding
    (cp1252 in many a Windows pipe), no newline translation."""
    from .analysis.export import write_csv

    if output is None or output == "-":
        sys.stdout.flush()
        stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            return write_csv(frames, columns, stdout)
        finally:
            stdout.detach()  # flushed; sys.stdout stays open
    with open(output, "w", encoding="utf-8", newline="") as file:
        return write_csv(frames, columns, file)


def _parquet(frames: Any, output: str) -> int:
    from .analysis.export import write_parquet

    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"Parquet needs pyarrow: pip install 'mdc-middleware[cli]' ({exc})") from None
    return write_parquet(frames, output)


@main.command("join")
@_source_options
@_filters
@click.option("--how", type=click.Choice(["inner", "left", "outer"]), default="inner", show_default=True,
              help="Keep inputs without predictions (left) or everything (outer).")
@click.option("-o", "--output", help="File to write (.csv or .parquet); stdout when absent.")
@click.pass_obj
def join_command(context: _Context, model: Optional[str], version: Optional[str], start: Any, end: Any,
                 how: str, output: Optional[str]) -> None:
    """Inputs beside their predictions, on the correlation id; redelivered rows removed."""
    from .analysis.chunks import data_bytes
    from .analysis.export import as_kinds, column_kinds
    from .analysis.join import joined_columns
    from .analysis.partitions import JoinTotals, join_partitioned

    _check_output(output)
    filters = dict(model=model, version=version, start=start, end=end)
    days = dict(model=model, version=version, start=_day(start), end=_day(end))
    columns = {side: header_columns(context.source, side, **days) for side in ("inputs", "predictions")}
    if not columns["inputs"] and not columns["predictions"]:
        context.check_names("inputs", model, version)
    totals = JoinTotals()
    parquet = bool(output and output.lower().endswith(".parquet"))

    def cells(chunk: Any) -> pd.DataFrame:  # Parquet holds values as collected; CSV the cells as written
        return chunk.values() if parquet else chunk.frame

    frames = join_partitioned((cells(c) for c in context.chunks("inputs", **filters)),
                              (cells(c) for c in context.chunks("predictions", **filters)),
                              columns["inputs"], columns["predictions"], how,
                              data_bytes(context.source, "inputs", **days)
                              + data_bytes(context.source, "predictions", **days), totals)
    if parquet:
        found = {side: column_kinds(context.chunks(side, **filters, shown=False), context.notes)
                 for side in ("inputs", "predictions")}
        kinds = {}
        for name in joined_columns(columns["inputs"], columns["predictions"]):
            own = name[:-len("_prediction")] if name.endswith("_prediction") else name
            kinds[name] = found["inputs"].get(name) or found["predictions"].get(own) or "text"
        _parquet((as_kinds(frame, kinds) for frame in frames), output)
    else:
        _csv(frames, joined_columns(columns["inputs"], columns["predictions"]), output)
    click.echo(f"{totals.rows} rows; {totals.duplicates_removed} redelivered rows removed; "
               f"{totals.unmatched_inputs} inputs without a prediction; "
               f"{totals.unmatched_predictions} predictions without an input"
               + ("" if totals.inputs or totals.predictions
                  else context.days_collected("inputs", model, version, start, end)), err=True)
    if totals.inputs and totals.predictions and totals.matched == 0:
        click.echo("error: no input joined a prediction: their $aml_dc_correlation_id values never agree. Rows "
                   "collected outside any web request (or in a sync FastAPI route that does not take the request) "
                   "get an id per collect() call; collect them inside the request, with the middleware, or pass "
                   "the same user_correlation_id to both collectors.", err=True)
        sys.exit(1)


@main.command("tail")
@_source_options
@click.argument("designation")
@click.option("--model", help="Model name.")
@click.option("--version", "version", help="Model version.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls.")
@click.option("--duration", type=float, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--max-rows", type=int, help="Stop after this many rows.")
@click.option("--from-start", is_flag=True, help="Print the rows already there first.")
@click.pass_obj
def tail_command(context: _Context, designation: str, model: Optional[str], version: Optional[str],
                 interval: float, duration: Optional[float], max_rows: Optional[int], from_start: bool) -> None:
    """Print new rows as they arrive, as CSV."""
    from .analysis.tail import Follower

    started = time.monotonic()
    try:
        if context.data and not Path(context.data).exists():
            # No data yet: the local sink makes its folder with the first rows it writes (a flush interval
            # after the first request), so a tail started with the service waits for it, as tail -F does.
            click.echo(f"mdc tail: no collected data folder at {context.data!r} yet; waiting for it (Ctrl-C "
                       "stops)", err=True)
            while not Path(context.data).exists():
                if duration is not None and time.monotonic() - started >= duration:
                    return
                time.sleep(interval)
            from_start = True  # every row there landed after the tail began
        follower = Follower(context.source, from_start=from_start, designation=designation, model=model,
                            version=version)
        click.echo(f"mdc tail: {designation} rows in {describe_source(context.source)} as they land (the writer "
                   "flushes every 5 s by default); Ctrl-C stops", err=True)
        out = sys.stdout.buffer

        def write(chunk: bytes) -> None:
            out.write(chunk)
            out.flush()

        follower.follow(write, interval=interval, duration=None if duration is None
                        else max(0.0, duration - (time.monotonic() - started)), max_rows=max_rows)
    except KeyboardInterrupt:
        pass


@main.command("drift")
@_source_options
@click.option("--baseline", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training data as CSV (or .parquet), one column per feature.")
@_filters
@click.option("--designation", default="inputs", show_default=True)
@click.option("--features", help="Comma-separated features to compare (default: all shared columns).")
@click.option("--threshold", type=float, default=30.0, show_default=True,
              help="Drift magnitude (0-100), overall or on any day, at which the exit code is 3.")
@click.option("--psi-threshold", type=float, default=0.2, show_default=True,
              help="PSI at which a feature has drifted.")
@click.option("--drift-share", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Share of the compared features that must drift for the exit code 3.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON summary here ('-': stdout).")
@click.option("--engine", type=click.Choice(["embedded", "spark"]), default="embedded", show_default=True,
              help="Count on this machine, streaming (embedded), or with Spark.")
@click.option("--master", help="With --engine spark: the Spark master (default local[2]; SPARK_REMOTE for Spark "
                               "Connect).")
@click.option("--spark-path", help="With --engine spark: where Spark reads the data (wasbs://…, abfss://…); "
                                   "default the --data folder.")
@click.pass_obj
def drift_command(context: _Context, baseline: str, model: Optional[str], version: Optional[str], start: Any,
                  end: Any, designation: str, features: Optional[str], threshold: float, psi_threshold: float,
                  drift_share: float, html_path: Optional[str], json_path: Optional[str], engine: str,
                  master: Optional[str], spark_path: Optional[str]) -> None:
    """Drift of collected data from a training baseline: exit code 3 on drift, 2 when nothing could be
    compared (no feature in common, an empty or unreadable baseline), 1 on other errors."""
    from .analysis.drift import compute_drift

    try:
        import scipy  # noqa: F401
    except ImportError:
        raise click.ClickException("mdc drift needs scipy and matplotlib: pip install 'mdc-middleware[analysis]'")
    base = _read_baseline(baseline)
    chosen = [f.strip() for f in features.split(",")] if features else None
    seen = [0]

    def target():  # the collected rows streamed a chunk at a time: memory does not grow with them
        for chunk in context.chunks(designation, model, version, start, end):
            seen[0] += len(chunk.frame)
            yield chunk.values()  # as collected: the training data never had a neutralising quote

    try:
        if engine == "spark":
            result = _drift_on_spark(context, base, designation, chosen, master, spark_path, seen, threshold=threshold,
                                     psi_threshold=psi_threshold, drift_share=drift_share, model=model,
                                     version=version, start=_day(start), end=_day(end))
        else:
            result = compute_drift(base, target(), features=chosen, threshold=threshold,
                                   psi_threshold=psi_threshold, drift_share=drift_share)
    except ValueError as exc:
        if not seen[0]:
            context.check_names(designation, model, version)
            raise click.ClickException(f"no collected {designation} rows in {describe_source(context.source)} "
                                       "for these filters"
                                       + context.days_collected(designation, model, version, start, end)) from None
        raise _NotCompared(f"--baseline {baseline}: {exc}") from None
    summary = json.dumps(result.to_dict(), indent=2)
    if json_path == "-":
        click.echo(summary)
    elif json_path:
        Path(json_path).write_text(summary + "\n", encoding="utf-8")
    if html_path:
        from .analysis.report import render_html

        about = {"source": describe_source(context.source), "designation": designation,
                 "model": model or "all", "version": version or "all", "baseline": baseline}
        Path(html_path).write_text(render_html(result, about=about), encoding="utf-8")
    drifted, compared = result.drifted_features, result.compared_features
    worst = max(result.days, key=lambda day: day.magnitude, default=None)
    click.echo(f"{'DRIFT' if result.drifted else 'no drift'}: {len(drifted)} of {len(compared)} features drifted"
               + (f" ({', '.join(_with_missing_values(name, result) for name in drifted)})" if drifted else "")
               + f"; magnitude {result.overall.magnitude:.1f}"
               + (f", worst day {worst.label} {worst.magnitude:.1f}" if worst else "")
               + f"; {result.overall.rows:,} rows over {len(result.days)} day(s). Drift: a feature at PSI "
               f"{psi_threshold:g} or distance {threshold / 100:g}; {drift_share:.0%} of the features, or magnitude "
               f"{threshold:g}"
               + (f". Not compared: {', '.join(f'{name} ({why})' for name, why in result.skipped_features.items())}"
                  if result.skipped_features else ""), err=json_path == "-")
    if result.drifted:
        sys.exit(EXIT_DRIFT)


def _read_baseline(path: str) -> pd.DataFrame:
    """The training data (or collected rows of another time): Parquet, or comma-separated UTF-8 text. What a
    spreadsheet saves otherwise is refused saying how to save it, before anything is read from storage."""
    try:
        base = pd.read_parquet(path) if path.lower().endswith(".parquet") else pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise _NotCompared(f"--baseline {path}: not UTF-8 text (a byte {exc.object[exc.start]:#04x}); save it as "
                           "CSV UTF-8") from None
    except Exception as exc:  # a binary file, an empty one, a broken CSV
        raise _NotCompared(f"--baseline {path}: not a readable CSV or Parquet file ({type(exc).__name__})") from None
    if len(base.columns) == 1:
        separator = next((name for name in (";", "\t", "|") if name in str(base.columns[0])), None)
        if separator is not None:
            raise _NotCompared(f"--baseline {path}: one column named {str(base.columns[0])[:60]!r}: the file is "
                               f"separated by {separator!r}, not commas; save it comma-separated (CSV)")
    if not path.lower().endswith(".parquet") and any(str(c).startswith("$aml_") for c in base.columns):
        # Collected rows saved by `mdc read -o x.csv` (last month as the reference): their cells as written, a
        # formula's neutralising quote in front ("'-"); compared as collected, as the collected side is.
        base = as_collected(base)
    return base


def _with_missing_values(feature: str, result: Any) -> str:
    """``feature``, and its rows without a value where their share moved by the drift threshold or more, on the
    whole range or on a day (the worst): "y: no number in 50% of rows, 0% in the baseline"."""
    moves = [f for window in [result.overall, *result.days] for f in window.features if f.feature == feature]
    worst = max(moves, key=lambda f: f.missing_moved, default=None)
    if worst is None or 100 * worst.missing_moved < result.threshold:
        return feature
    what = "no number" if worst.kind == "numeric" else "no value"  # text where a number belongs counts too
    return (f"{feature}: {what} in {worst.missing_share:.0%} of rows, {worst.baseline_missing_share:.0%} in the "
            "baseline")


def _drift_on_spark(context: _Context, base: pd.DataFrame, designation: str, features: Optional[list],
                    master: Optional[str], spark_path: Optional[str], seen: list, **options: Any) -> Any:
    path = spark_path or context.data
    if not path:
        raise click.UsageError("--engine spark reads a folder (--data) or a URL Spark can read (--spark-path "
                               "wasbs://<container>@<account>.blob.core.windows.net/)")
    try:
        from .analysis.spark import drift_spark, local_session
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise click.ClickException(f"--engine spark needs pyspark: pip install 'mdc-middleware[spark]' ({exc})")
    from .analysis.spark import data_files

    spark = local_session(master)
    try:
        filters = {k: options[k] for k in ("model", "version", "start", "end")}
        seen[0] = len(data_files(spark, path, designation, **filters))  # files: "no rows" is told apart
        result = drift_spark(spark, path, base, designation=designation, features=features, **options)
    finally:
        if not master and not os.environ.get("SPARK_REMOTE"):
            spark.stop()
    return result


@main.command("quality")
@_source_options
@_filters
@click.option("--key", help="A column the inputs and the labels share (LoanNumber, CustomerId), when labels were "
                            "not collected with their request's correlation values.")
@click.option("--prediction", help="The predictions' column to score (default: their only data column).")
@click.option("--label", help="The labels' column (default: their only data column).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the result here ('-': stdout).")
@click.pass_obj
def quality_command(context: _Context, model: Optional[str], version: Optional[str], start: Any, end: Any,
                    key: Optional[str], prediction: Optional[str], label: Optional[str],
                    json_path: Optional[str]) -> None:
    """Model quality per day: predictions against the labels collected later (designation 'labels')."""
    from .analysis.chunks import data_bytes
    from .analysis.quality import model_quality_streamed

    filters = dict(model=model, version=version, start=start, end=end)
    days = dict(model=model, version=version, start=_day(start), end=_day(end))
    everything = dict(model=model, version=version)  # labels come later: from any day
    sides = {"inputs": days, "predictions": days, "labels": everything}
    columns = {side: header_columns(context.source, side, **chosen) for side, chosen in sides.items()}
    total = sum(data_bytes(context.source, side, **chosen) for side, chosen in sides.items())
    try:
        result = model_quality_streamed(
            (c.frame for c in context.chunks("inputs", **filters)) if key else iter(()),
            (c.frame for c in context.chunks("predictions", **filters)),
            (c.frame for c in context.chunks("labels", model, version, None, None)),
            columns["inputs"] if key else [], columns["predictions"], columns["labels"], key=key,
            prediction=prediction, label=label, total_bytes=total)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if json_path == "-":
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif json_path:
        Path(json_path).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    table = pd.DataFrame([{"day": w.label, "rows": w.rows, **w.metrics} for w in [*result.days, result.overall]])
    click.echo(f"{result.task}: {result.prediction_column!r} against {result.label_column!r}, "
               f"{result.joined_rows:,} predictions with a label, {result.predictions_without_label:,} without",
               err=json_path == "-")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), err=json_path == "-")


if __name__ == "__main__":  # pragma: no cover
    main()
