"""Reading collected files a chunk at a time, from a folder and from blobs streamed."""
import pandas as pd
import pytest
from azure.storage.blob import ContainerClient

from mdc_middleware.analysis.chunks import header_columns, iter_chunks

DAY = "modeldata/modeldata/s/r/w/svc/m/1/inputs/2026/11/{:02d}/{}"
HEADER = "x,city,$aml_dc_correlation_id\n"


def files(rows_per_day=2_500):
    """Two days of data and, in between, a file created a moment ago: no header yet, no bytes."""
    day1 = HEADER + "".join(f"{i},Oslo,id{i}\n" for i in range(rows_per_day))
    day2 = "x,y,$aml_dc_correlation_id\n" + "".join(f"{i},{i},id{i}\n" for i in range(rows_per_day))
    return {DAY.format(1, "data.csv"): day1, DAY.format(1, "data-h-2.csv"): "", DAY.format(2, "data.csv"): day2}


def check(source) -> None:
    assert header_columns(source, "inputs") == ["x", "city", "$aml_dc_correlation_id", "y"]
    chunks = list(iter_chunks(source, "inputs", chunk_rows=1_000))
    assert [len(c.frame) for c in chunks] == [1_000, 1_000, 500] * 2
    rows = pd.concat([c.frame for c in chunks], ignore_index=True)
    assert rows["x"].tolist() == [str(i) for i in range(2_500)] * 2  # text, as written


def test_chunks_of_a_folder_skip_an_empty_file(tmp_path):
    for name, text in files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    check(tmp_path)


@pytest.mark.azurite
def test_chunks_of_blobs_are_streamed_and_skip_an_empty_blob(azurite, container_name):
    client = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    client.create_container()
    for name, text in files().items():
        blob = client.get_blob_client(name)
        blob.create_append_blob()
        if text:
            blob.append_block(text.encode())
    check(client)
