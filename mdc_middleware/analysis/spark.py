"""The same analysis on Spark, for data that outgrows one machine (Databricks, Synapse, Azure ML serverless Spark).

Each function takes a SparkSession and the path of the collected data: the local sink's folder, or the container
as Spark names it (``wasbs://<container>@<account>.blob.core.windows.net/``, ``abfss://…``; the cluster holds the
credentials). Files are listed with the cluster's Hadoop file system, grouped by header (the columns of one
model can change over time) and read as CSV with the options the writer's files need (a header; quoted cells
holding commas, quotes and line breaks). Then:

- ``read_spark``: the rows, typed like ``read.typed``: the scoring timestamp a UTC timestamp, the boundary an
  integer, ids and names text, a data column numeric when every cell is a number (text otherwise).
- ``join_spark``: inputs beside their predictions by correlation id and position, redeliveries removed as
  ``join.drop_redelivered`` removes them (a later run of a correlation id with the same rows).
- ``drift_spark``: the embedded engine's statistics from counts made by Spark aggregations (``distributions``):
  the same grid from the baseline, so both engines give the same numbers on the same data.

Needs ``pyspark`` (the ``spark`` extra) and a Java runtime, or a Spark Connect server (``SPARK_REMOTE``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..storage.paths import parse_path
from ..records.record import BOUNDARY, CORRELATION_ID, META_COLUMNS, SCORING_TIMESTAMP
from ..records.csv_encoding import WRITTEN_QUOTE
from .distributions import NumericCounts, add_categories
from .drift import DriftCounter, DriftResult
from .read import _TEXT_COLUMNS, Day, _wanted, absent_name, as_day

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

CSV_OPTIONS = {"header": "true", "multiLine": "true", "quote": '"', "escape": '"', "inferSchema": "false",
               "mode": "PERMISSIVE", "encoding": "UTF-8", "ignoreLeadingWhiteSpace": "false",
               "ignoreTrailingWhiteSpace": "false", "nullValue": "\u0000"}  # an empty cell stays "", as written
_FILE, _SEQ = "_mdc_file", "_mdc_seq"


def local_session(master: Optional[str] = None, app_name: str = "mdc") -> "SparkSession":
    """A session: on Spark Connect when ``SPARK_REMOTE`` is set, else on ``master`` (default ``local[2]``)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if os.environ.get("SPARK_REMOTE") and not master:
        return builder.remote(os.environ["SPARK_REMOTE"]).getOrCreate()
    return (builder.master(master or "local[2]").config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC").config("spark.driver.memory", "1g")
            .config("spark.sql.shuffle.partitions", "8").getOrCreate())  # not 200 tasks a shuffle on two cores


def data_files(spark: "SparkSession", path: str, designation: Optional[str] = None, *, model: Optional[str] = None,
               version: Optional[str] = None, start: Optional[Day] = None, end: Optional[Day] = None) -> List[str]:
    """The data files under ``path`` that pass the filters, by date then name (as ``read.list_data_files``)."""
    start, end = as_day(start, "start"), as_day(end, "end")
    found = []
    for name in _list(spark, path):
        parsed = parse_path(name)
        if parsed is not None and not name.endswith(".jsonl") and _wanted(parsed, designation, model, version,
                                                                            start, end):
            found.append((parsed.date, parsed.file_name, name))
    return [name for _, _, name in sorted(found)]


def _list(spark: "SparkSession", path: str) -> List[str]:
    if "://" not in path or path.startswith("file:"):
        local = path[len("file:"):] if path.startswith("file:") else path
        if not os.path.isdir(local):  # as Hadoop's listing of a missing path fails, not "nothing collected yet"
            raise FileNotFoundError(f"no collected data folder at {local!r}")
        return [os.path.join(folder, f) for folder, _, files in os.walk(local) for f in files if f.endswith(".csv")]
    jvm = spark.sparkContext._jvm  # type: ignore[union-attr]
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    files = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listFiles(hadoop_path, True)
    names = []
    while files.hasNext():
        name = files.next().getPath().toString()
        if name.endswith(".csv"):
            names.append(name)
    return names


def _header(spark: "SparkSession", name: str) -> str:
    """A file's first line (its header), read without a Spark job."""
    if "://" not in name:
        with open(name, "rb") as handle:
            return _first_line(handle.read(1 << 20))
    jvm = spark.sparkContext._jvm  # type: ignore[union-attr]
    hadoop_path = jvm.org.apache.hadoop.fs.Path(name)
    stream = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).open(hadoop_path)
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
    try:  # one call for the line, not one py4j round trip a byte
        return _first_line((reader.readLine() or "").encode("utf-8"))
    finally:
        reader.close()


def _first_line(data: bytes) -> str:
    import csv
    import io

    reader = csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline=""))
    return "\x1f".join(next(reader, []))


def read_raw(spark: "SparkSession", path: str, designation: str, **filters: Any) -> Optional["DataFrame"]:
    """The rows as text (empty cells ""), with each row's file and its place in it (``_mdc_file``, ``_mdc_seq``);
    None when no file matches."""
    from pyspark.sql import functions as F

    groups: Dict[str, List[str]] = {}
    files = data_files(spark, path, designation, **filters)
    for name in files:
        groups.setdefault(_header(spark, name), []).append(name)
    order = {name: index for index, name in enumerate(files)}
    frames = []
    for group in groups.values():
        frame = spark.read.options(**CSV_OPTIONS).csv(group)
        frames.append(frame.withColumn(_FILE, F.input_file_name()).withColumn(_SEQ, F.monotonically_increasing_id()))
    if not frames:
        if not files:
            _warn_of_absent_name(spark, path, designation, filters.get("model"), filters.get("version"))
        return None
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame, allowMissingColumns=True)
    data = [c for c in rows.columns if c not in (_FILE, _SEQ)]
    ranks = spark.createDataFrame([(_uri(n), i) for n, i in order.items()], [_FILE + "_name", "_mdc_file_rank"])
    rows = rows.select(*[F.coalesce(F.col(f"`{c}`"), F.lit("")).alias(c) for c in data], _FILE, _SEQ)
    return rows.join(F.broadcast(ranks), F.col(_FILE) == F.col(_FILE + "_name"), "left").drop(_FILE + "_name")


def _warn_of_absent_name(spark: "SparkSession", path: str, designation: Optional[str], model: Optional[str],
                         version: Optional[str]) -> None:
    """A name nowhere under ``path`` while others are: a ``UserWarning`` naming what there is, as
    ``read_collected`` warns."""
    present = []
    for name in _list(spark, path):
        parsed = parse_path(name)
        if parsed is not None:
            present.append((parsed.designation, parsed.model_name, parsed.model_version))
    absent = absent_name(present, designation, model, version, path)
    if absent is not None:
        warnings.warn(f"{absent}. Nothing read", UserWarning, stacklevel=3)


def _uri(name: str) -> str:
    return name if "://" in name else "file://" + os.path.abspath(name)


def read_spark(spark: "SparkSession", path: str, designation: str, **filters: Any) -> Optional["DataFrame"]:
    """The rows of one designation, typed (see the module's docstring), in file order; None when no file matches."""
    from pyspark.sql import functions as F

    raw = read_raw(spark, path, designation, **filters)
    if raw is None:
        return None
    raw = raw.orderBy("_mdc_file_rank", _SEQ)
    data = [c for c in raw.columns if c not in (_FILE, _SEQ, "_mdc_file_rank")]
    kinds = _numeric_kinds(raw, [c for c in data if c not in META_COLUMNS])
    columns = []
    for name in data:
        column = F.col(f"`{name}`")
        if name == SCORING_TIMESTAMP:
            column = F.to_timestamp(F.nullif(column, F.lit("")))
        elif name == BOUNDARY:
            column = _number(name, "long")
        elif kinds.get(name) in ("long", "double") and name not in _TEXT_COLUMNS:
            column = _number(name, kinds[name])
        else:  # text as collected, as read_collected gives it
            column = F.regexp_replace(column, WRITTEN_QUOTE, "")
        columns.append(column.alias(name))
    return raw.select(*columns)


def _number(name: str, kind: str) -> Any:
    """The column's cells as numbers of ``kind``; null where a cell is empty or no such number (ANSI or not)."""
    from pyspark.sql import functions as F

    quoted = name.replace("`", "``")
    return F.expr(f"try_cast(nullif(`{quoted}`, '') AS {kind.upper()})")


def _numeric_kinds(frame: "DataFrame", names: Sequence[str]) -> Dict[str, str]:
    """``long`` or ``double`` for the columns whose every non-empty cell is such a number (one aggregation)."""
    from pyspark.sql import functions as F

    if not names:
        return {}
    checks = []
    for index, name in enumerate(names):
        cell = F.col(f"`{name}`")
        present = cell != ""
        checks += [F.sum(present.cast("long")).alias(f"p{index}"),
                   F.sum((present & F.col(f"`{name}`").rlike(r"^-?(0|[1-9][0-9]*)$")).cast("long")).alias(f"i{index}"),
                   F.sum((present & _number(name, "double").isNotNull()
                          & ~cell.rlike(r"^(\+|-?0[0-9])")).cast("long")).alias(f"d{index}")]
    row = frame.agg(*checks).collect()[0]
    kinds = {}
    for index, name in enumerate(names):
        present = row[f"p{index}"] or 0
        if present and row[f"i{index}"] == present:
            kinds[name] = "long"
        elif present and row[f"d{index}"] == present:
            kinds[name] = "double"
    return kinds


@dataclass
class SparkJoin:
    frame: "DataFrame"
    duplicates_removed: int
    unmatched_inputs: int
    unmatched_predictions: int
    matched: int


def _without_redeliveries(raw: "DataFrame") -> Tuple["DataFrame", int]:
    """Rows without later runs of a correlation id that repeat an earlier run of it exactly; and how many went.

    A run: rows next to each other in one file with one correlation id. Runs are compared by their rows' text."""
    from pyspark.sql import functions as F

    # Most correlation ids are one run: rows side by side in one file. Only the others are looked at closely.
    spans = raw.groupBy(CORRELATION_ID).agg(F.countDistinct(_FILE).alias("_files"), F.min(_SEQ).alias("_first"),
                                            F.max(_SEQ).alias("_last"), F.count(F.lit(1)).alias("_rows"))
    suspects = spans.where((F.col("_files") > 1) | (F.col("_last") - F.col("_first") + 1 != F.col("_rows")))
    suspects = suspects.select(CORRELATION_ID).cache()
    if suspects.isEmpty():
        suspects.unpersist()
        return raw, 0
    alone = raw.join(suspects, CORRELATION_ID, "left_anti")
    kept, removed = _runs_kept(raw.join(suspects, CORRELATION_ID, "left_semi"))
    suspects.unpersist()
    return alone.unionByName(kept), removed


def _runs_kept(raw: "DataFrame") -> Tuple["DataFrame", int]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    data = [c for c in raw.columns if c not in (_FILE, _SEQ, "_mdc_file_rank")]
    in_file = Window.partitionBy(_FILE).orderBy(_SEQ)
    previous = F.lag(CORRELATION_ID).over(in_file)
    marked = raw.withColumn("_mdc_new_run", (previous.isNull() | (previous != F.col(CORRELATION_ID))).cast("int"))
    marked = marked.withColumn("_mdc_run", F.sum("_mdc_new_run").over(in_file.rowsBetween(Window.unboundedPreceding, 0)))
    marked = marked.withColumn("_mdc_row_hash", F.xxhash64(*[F.col(f"`{c}`") for c in data]))
    runs = (marked.groupBy(_FILE, "_mdc_run", CORRELATION_ID)
            .agg(F.min("_mdc_file_rank").alias("_rank"), F.min(_SEQ).alias("_start"),
                 F.sha2(F.concat_ws(",", F.transform(F.sort_array(F.collect_list(F.struct(_SEQ, "_mdc_row_hash"))),
                                                     lambda s: s["_mdc_row_hash"].cast("string"))), 256)
                 .alias("_content"), F.count(F.lit(1)).alias("_rows")))
    first = Window.partitionBy(CORRELATION_ID, "_content").orderBy("_rank", "_start")
    runs = runs.withColumn("_copy", F.row_number().over(first))
    removed = runs.where("_copy > 1").agg(F.sum("_rows")).collect()[0][0] or 0
    kept = runs.where("_copy = 1").select(_FILE, "_mdc_run")
    rows = marked.join(kept, [_FILE, "_mdc_run"], "inner").drop("_mdc_new_run", "_mdc_run", "_mdc_row_hash")
    return rows, int(removed)


def join_spark(spark: "SparkSession", path: str, how: str = "inner", **filters: Any) -> SparkJoin:
    """Inputs beside their predictions (see the module's docstring); cells as text, as ``mdc join`` writes them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sides = []
    removed = 0
    for designation in ("inputs", "predictions"):
        raw = read_raw(spark, path, designation, **filters)
        if raw is None:
            raise ValueError(f"no {designation} under {path}")
        rows, gone = _without_redeliveries(raw)
        removed += gone
        order = Window.partitionBy(CORRELATION_ID).orderBy("_mdc_file_rank", _SEQ)
        sides.append(rows.withColumn("_mdc_position", F.row_number().over(order)).drop(_FILE, _SEQ, "_mdc_file_rank"))
    inputs, predictions = sides
    meta = [c for c in META_COLUMNS if c != CORRELATION_ID and c in predictions.columns]
    predictions = predictions.drop(*meta)
    renamed = [F.col(f"`{c}`").alias(c + "_prediction" if c in inputs.columns and c not in (CORRELATION_ID, "_mdc_position")
                                     else c) for c in predictions.columns]
    predictions = predictions.select(*renamed)
    keys = [CORRELATION_ID, "_mdc_position"]
    inputs, predictions = inputs.cache(), predictions.cache()
    matched = inputs.join(predictions.select(*keys), keys, "left_semi").count()
    unmatched_inputs = inputs.count() - matched
    unmatched_predictions = predictions.count() - predictions.join(inputs.select(*keys), keys, "left_semi").count()
    joined = inputs.join(predictions, keys, how).drop("_mdc_position")
    return SparkJoin(joined, removed, unmatched_inputs, unmatched_predictions, matched)


def drift_spark(spark: "SparkSession", path: str, baseline: pd.DataFrame, *, designation: str = "inputs",
                features: Optional[Sequence[str]] = None, threshold: float = 30.0, psi_threshold: float = 0.2,
                drift_share: float = 0.5, **filters: Any) -> DriftResult:
    """``drift.compute_drift`` of the collected rows against ``baseline``, counted by Spark."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    raw = read_raw(spark, path, designation, **filters)
    columns = [c for c in raw.columns if c not in (_FILE, _SEQ, "_mdc_file_rank")] if raw is not None else []
    counter = DriftCounter(baseline, features)
    counter.see_columns(columns)  # every file's: those a file lacks are empty there
    if raw is None:
        return counter.result(threshold=threshold, psi_threshold=psi_threshold, drift_share=drift_share)
    stamp = (F.to_timestamp(F.nullif(F.col(SCORING_TIMESTAMP), F.lit(""))) if SCORING_TIMESTAMP in columns
             else F.lit(None).cast("timestamp"))
    rows = raw.withColumn("_mdc_day", F.date_format(stamp, "yyyy-MM-dd")).cache()
    for day, count in rows.groupBy("_mdc_day").count().collect():
        counter.window("overall").rows += count
        if day is not None:
            counter.window(day).rows += count
    for name, profile in counter.profiles.items():
        cell = F.col(f"`{name}`")
        if profile.grid is not None:
            numbers = rows.select("_mdc_day", _number(name, "double").alias("v")).where(
                F.col("v").isNotNull() & ~F.isnan("v"))
            splits = [-float("inf"), *profile.grid.edges.tolist(), float("inf")]
            bucketed = Bucketizer(splits=splits, inputCol="v", outputCol="b").transform(numbers)
            found = bucketed.groupBy("_mdc_day", "b").agg(F.count(F.lit(1)).alias("n"), F.sum("v").alias("s"),
                                                         F.min("v").alias("lo"), F.max("v").alias("hi")).collect()
            size = len(profile.grid.edges) + 1
            for day, bucket, n, total, low, high in found:
                counts, sums = np.zeros(size, dtype=np.int64), np.zeros(size)
                counts[int(bucket)], sums[int(bucket)] = n, total
                for label in ("overall",) + ((day,) if day is not None else ()):
                    window = counter.window(label)
                    target: NumericCounts = window.features[name]
                    target.merge(counts, sums, low, high)
        else:
            as_sent = F.regexp_replace(cell, WRITTEN_QUOTE, "")  # as collected, as the embedded engine counts it
            found = rows.where(cell != "").groupBy("_mdc_day", as_sent.alias("v")).count().collect()
            by_day: Dict[Optional[str], Dict[str, float]] = {}
            for day, value, n in found:
                by_day.setdefault(day, {})[value] = float(n)
                by_day.setdefault("overall", {})
                by_day["overall"][value] = by_day["overall"].get(value, 0.0) + n
            for label, values in by_day.items():
                if label is None:
                    continue
                window = counter.window(label)
                window.features[name] = add_categories(window.features[name], pd.Series(values),
                                                       profile.counts.index)
    rows.unpersist()
    return counter.result(threshold=threshold, psi_threshold=psi_threshold, drift_share=drift_share)

