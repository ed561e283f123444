"""Row ends in CSV bytes, checked against the csv module: a newline inside a quoted cell never ends a row,
wherever a window of the bytes starts and ends."""
import csv
import io

from hypothesis import given, strategies as st

from mdc_middleware.records.csv_encoding import CsvLines
from mdc_middleware.records.csv_scanning import csv_row_count, last_row_end, nth_row_end

cell = st.text(st.sampled_from(['a', ',', '"', '\n', '\r', ' ', 'é']), max_size=5)
table = st.lists(st.lists(cell, min_size=1, max_size=3), min_size=0, max_size=8)


def as_csv(rows) -> bytes:
    lines = CsvLines()
    writer = lines.writer()
    for row in rows:
        writer.writerow(row)
    return lines.text().encode()


def row_ends(payload: bytes) -> list:
    """Offsets past each row, as the csv module reads the rows (one row at a time, re-encoded)."""
    ends, offset = [], 0
    for row in csv.reader(io.StringIO(payload.decode(), newline="")):
        offset += len(as_csv([row]))
        ends.append(offset)
    return ends


@given(table)
def test_the_row_count_is_the_csv_modules(rows):
    payload = as_csv(rows)
    assert csv_row_count(payload) == len(rows)
    assert row_ends(payload)[-1:] == ([len(payload)] if rows else [])


@given(table, st.data())
def test_row_ends_in_a_window_starting_at_a_row_start(rows, data):
    payload = as_csv(rows)
    ends = row_ends(payload)
    starts = [0] + ends[:-1]
    first = data.draw(st.integers(0, max(len(starts) - 1, 0)))
    start = starts[first] if rows else 0
    end = data.draw(st.integers(start, len(payload)))
    inside = [e for e in ends if start < e <= end]
    assert last_row_end(payload, start, end) == (inside[-1] if inside else -1)
    for n in range(1, len(inside) + 2):
        assert nth_row_end(payload, start, end, n) == (inside[n - 1] if n <= len(inside) else -1)
    assert nth_row_end(payload, start, end, 0) == -1


def test_a_quoted_newline_is_not_a_row_end():
    payload = b'a,"line\nbreak"\nb,c\n'
    assert csv_row_count(payload) == 2
    assert last_row_end(payload, 0, payload.index(b"b,c")) == payload.index(b"b,c")
    assert last_row_end(payload, 0, 8) == -1  # inside the quoted cell
