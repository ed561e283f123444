"""Writing collected rows out a chunk at a time: one Parquet schema for chunks typed apart."""
import pandas as pd

from mdc_middleware.analysis.chunks import Chunk
from mdc_middleware.analysis.export import typed_frames, write_parquet


def chunks_of(*columns):
    frames = [pd.DataFrame({"x": cells, "n": ["1"] * len(cells)}) for cells in columns]
    return lambda: (Chunk("f.csv", "folder", frame, i) for i, frame in enumerate(frames))


def test_a_chunk_that_widens_a_column_starts_the_file_again_with_the_wider_type(tmp_path):
    out = tmp_path / "x.parquet"
    rows = write_parquet(typed_frames(chunks_of(["1", "2"], ["2.5", ""], ["00501", "7"]), lambda folder: None), out)
    frame = pd.read_parquet(out)
    assert rows == len(frame) == 6
    assert frame["x"].tolist() == ["1", "2", "2.5", "", "00501", "7"]  # text once one chunk has text: as written
    assert frame["n"].tolist() == [1] * 6


def test_chunks_of_one_kind_are_read_once_and_a_widening_costs_two_more_passes(tmp_path):
    for cells, passes_needed, kind in (((["1", "2"], ["3", ""], ["4", "6"]), 1, "Int64"),
                                       ((["1", "2"], ["3", ""], ["4.5", "6"]), 3, "float64")):
        passes = []

        def counted(cells=cells):
            passes.append(1)
            return chunks_of(*cells)()

        out = tmp_path / "x.parquet"
        write_parquet(typed_frames(counted, lambda folder: None), out)
        frame = pd.read_parquet(out)
        assert len(passes) == passes_needed and str(frame["x"].dtype) == kind
        assert frame["x"].isna().tolist() == [False, False, False, True, False, False]
