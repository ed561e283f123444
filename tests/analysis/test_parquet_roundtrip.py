"""collect() → files → read_collected() → Parquet → every value as collected (text stays text, numbers stay
numbers), for the CSV layout with the writer's notes on text columns."""
import datetime as dt

import pandas as pd
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

import mdc_middleware
from mdc_middleware import ModelDataCollector, Settings
from mdc_middleware.analysis import read_collected
from mdc_middleware.analysis.chunks import iter_chunks
from mdc_middleware.analysis.export import typed_frames, write_parquet
from mdc_middleware.analysis.read import text_columns_noted

TEXT = st.one_of(
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),               # zip codes, ids: "00501", "12345"
    st.from_regex(r"[0-9]\.[0-9]{1,3}0", fullmatch=True),       # versions: "1.10"
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
    st.from_regex(r"['=+\-@]{1,3}[a-z0-9 ]{0,3}", fullmatch=True),  # "-", "+1 555", "=SUM", "@who", "'=x"
)
ROWS = st.lists(st.tuples(TEXT, st.integers(-10**12, 10**12),
                          st.floats(allow_nan=False, allow_infinity=False, width=64)), min_size=1, max_size=8)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(ROWS, min_size=1, max_size=3), neutralize=st.booleans())
def test_values_survive_the_parquet_round_trip(tmp_path_factory, batches, neutralize):
    """With formula neutralising on (the default) as well: the files hold ``'=x``, the values read back ``=x``."""
    folder = tmp_path_factory.mktemp("collected")
    settings = Settings.from_env({}, enabled=True, local_dir=str(folder), neutralize_formulas=neutralize,
                                 model_version="1.10")
    collector = ModelDataCollector("m", designation="inputs", feature_names=["code", "count", "score"],
                                   settings=settings)
    for rows in batches:
        collector.collect([list(row) for row in rows])
    assert mdc_middleware.flush(10)
    frame = read_collected(folder, "inputs")
    frame.to_parquet(folder / "x.parquet", index=False)
    # What `mdc read -o x.parquet` does, in chunks of 2 rows: typed apart, one schema for the file.
    write_parquet(typed_frames(lambda: iter_chunks(folder, "inputs", chunk_rows=2, jsonl_as_text=False),
                               lambda day: text_columns_noted(folder, [day])), folder / "streamed.parquet")
    sent = [row for rows in batches for row in rows]
    for name in ("x.parquet", "streamed.parquet"):
        back = pd.read_parquet(folder / name)
        assert back["code"].tolist() == [row[0] for row in sent]
        assert back["count"].tolist() == [row[1] for row in sent]
        assert back["score"].tolist() == [row[2] for row in sent]
        assert set(back["$aml_model_version"]) == {"1.10"}
    stamps = back["$aml_dc_scoring_timestamp"]
    assert all(isinstance(v, pd.Timestamp) and v.tzinfo is not None for v in stamps)
    assert abs(stamps.iloc[0] - pd.Timestamp(dt.datetime.now(dt.timezone.utc))) < pd.Timedelta(minutes=5)
    mdc_middleware.shutdown(10)
