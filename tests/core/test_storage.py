"""mangadistill.core.storage on local paths and on a real local GCS API server (gcp-storage-emulator)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from google.cloud import storage as gcs

from mangadistill.core import storage
from mangadistill.core.storage import ObjectNotFoundError, StorageError
from mangadistill.intent.contracts import LABELLED_MESSAGES


def _labelled_table() -> pa.Table:
    return pa.table(
        {
            "message_id": ["m1", "m2", "m3"],
            "text": ["Is One Piece vol. 104 in stock?", "ワンピースの最新巻", "reset my password\u2028now"],
            "label": ["product_question", "product_question", "account_security"],
        },
        schema=LABELLED_MESSAGES,
    )


def _nested_folder(root: Path, files: int) -> dict[str, bytes]:
    """Write `files` small files in nested sub-folders; returns {relative path: content}."""
    contents = {f"part{i % 3}/sub{i % 2}/file{i}.bin": b"payload %d" % i * (i + 1) for i in range(files)}
    for relative, data in contents.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return contents


def test_is_gcs() -> None:
    assert storage.is_gcs("gs://bucket/a.parquet")
    assert not storage.is_gcs("/tmp/gs://x")
    assert not storage.is_gcs(Path("data/a.parquet"))


# ---- local paths


def test_local_bytes_and_text_round_trip_creating_parents(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "blob.bin"
    storage.write_bytes(target, b"\x00\x01binary")
    assert storage.read_bytes(target) == b"\x00\x01binary"
    storage.write_text(str(target), "mangá ✓")
    assert storage.read_text(target) == "mangá ✓"
    assert storage.exists(target) and storage.exists(tmp_path / "new")


@pytest.mark.parametrize("name", ["labels.parquet", "labels.jsonl", "artifact_without_suffix"])
def test_local_table_round_trip(tmp_path: Path, name: str) -> None:
    table = _labelled_table()
    storage.write_table(table, tmp_path / "out" / name)
    back = storage.read_table(tmp_path / "out" / name)
    assert back.to_pylist() == table.to_pylist()  # includes the U+2028 inside a jsonl string


def test_parquet_keeps_schema_metadata_and_jsonl_is_one_object_per_line(tmp_path: Path) -> None:
    table = _labelled_table()
    storage.write_table(table, tmp_path / "a.parquet")
    assert storage.read_table(tmp_path / "a.parquet").schema.equals(LABELLED_MESSAGES, check_metadata=True)
    storage.write_table(table, tmp_path / "a.parquet.txt", fmt="jsonl")
    assert storage.read_text(tmp_path / "a.parquet.txt").count("\n") == table.num_rows


def test_read_csv_by_suffix_and_by_fmt(tmp_path: Path) -> None:
    storage.write_text(tmp_path / "a.csv", "sku,price_usd\nOP-104,9.99\nBERSERK-1,14.5\n")
    storage.write_text(tmp_path / "a.txt", "sku,price_usd\nOP-104,9.99\n")
    assert storage.read_table(tmp_path / "a.csv").column("price_usd").to_pylist() == [9.99, 14.5]
    assert storage.read_table(tmp_path / "a.txt", fmt="csv").column("sku").to_pylist() == ["OP-104"]


def test_jsonl_columns_follow_first_appearance_and_missing_keys_are_null(tmp_path: Path) -> None:
    storage.write_text(tmp_path / "a.jsonl", '{"b": 1, "a": [0.5, 0.5]}\n\n{"a": [1.0, 0.0], "c": "x"}\n')
    table = storage.read_table(tmp_path / "a.jsonl")
    assert table.column_names == ["b", "a", "c"]
    assert table.to_pylist() == [{"b": 1, "a": [0.5, 0.5], "c": None}, {"b": None, "a": [1.0, 0.0], "c": "x"}]


def test_jsonl_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    storage.write_text(path, '{"a": 1}\n\n{"a": 2,\n')
    with pytest.raises(StorageError, match=r"bad\.jsonl, line 3: not valid JSON"):
        storage.read_table(path)
    storage.write_text(path, '{"a": 1}\n[1, 2]\n')
    with pytest.raises(StorageError, match=r"bad\.jsonl, line 2: expected a JSON object, got list"):
        storage.read_table(path)


def test_jsonl_column_of_mixed_types_is_named(tmp_path: Path) -> None:
    storage.write_text(tmp_path / "mixed.jsonl", '{"id": 1, "v": "x"}\n{"id": 2, "v": [1]}\n')
    with pytest.raises(StorageError, match=r"mixed\.jsonl, column 'v'"):
        storage.read_table(tmp_path / "mixed.jsonl")


def test_jsonl_with_a_utf8_bom_is_read(tmp_path: Path) -> None:
    storage.write_bytes(tmp_path / "bom.jsonl", '\ufeff{"message_id": "m1", "text": "hi"}\n'.encode())
    assert storage.read_table(tmp_path / "bom.jsonl").to_pylist() == [{"message_id": "m1", "text": "hi"}]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_jsonl_nan_literal_names_file_column_and_line(tmp_path: Path, literal: str) -> None:
    text = f'{{"id": "a", "cost_usd": 0.1}}\n\n{{"id": "b", "cost_usd": {literal}}}\n'
    storage.write_text(tmp_path / "costs.jsonl", text)
    with pytest.raises(StorageError, match=r"costs\.jsonl, column 'cost_usd', line 3: NaN and Infinity are not"):
        storage.read_table(tmp_path / "costs.jsonl")


def test_jsonl_type_clash_names_file_column_and_first_bad_line(tmp_path: Path) -> None:
    lines = [f'{{"message_id": "m{i}", "text": "hello {i}"}}' for i in range(40)]
    lines[26] = '{"message_id": 26, "text": "hello 26"}'
    storage.write_text(tmp_path / "ids.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(StorageError, match=r"ids\.jsonl, column 'message_id', line 27: value 26 does not fit"):
        storage.read_table(tmp_path / "ids.jsonl")


def test_missing_local_file_is_object_not_found_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "a.parquet"
    for read in (storage.read_bytes, storage.read_table, storage.local_copy):
        with pytest.raises(ObjectNotFoundError, match=str(missing)) as caught:
            read(missing)
        assert isinstance(caught.value, FileNotFoundError)
    assert not storage.exists(missing)


def test_corrupt_parquet_names_file_and_format(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.parquet"
    storage.write_bytes(path, b"PAR1 this is not really parquet")
    with pytest.raises(StorageError, match=r"corrupt\.parquet: not a readable parquet file") as caught:
        storage.read_table(path)
    assert not isinstance(caught.value, ObjectNotFoundError)


def test_unknown_format_and_unwritable_table_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown table format 'xlsx'"):
        storage.read_table(tmp_path / "a", fmt="xlsx")
    with pytest.raises(StorageError, match=r"a\.csv: cannot write the table as csv"):
        storage.write_table(pa.table({"probs": [[0.1, 0.9]]}), tmp_path / "a.csv")


def test_local_list_upload_download_and_local_copy(tmp_path: Path) -> None:
    contents = _nested_folder(tmp_path / "src", files=12)
    listed = storage.list_uris(tmp_path / "src")
    assert listed == sorted(str(tmp_path / "src" / relative) for relative in contents)
    assert storage.list_uris(listed[0]) == [listed[0]]
    assert storage.list_uris(tmp_path / "absent") == []
    written = storage.upload_dir(tmp_path / "src", tmp_path / "copy")
    assert written == sorted(str(tmp_path / "copy" / relative) for relative in contents)
    storage.download_dir(tmp_path / "copy", tmp_path / "back")
    assert {p: (tmp_path / "back" / p).read_bytes() for p in contents} == contents
    assert storage.local_copy(str(tmp_path / "src")) == str(tmp_path / "src")
    with pytest.raises(ObjectNotFoundError, match="no such folder"):
        storage.download_dir(listed[0], tmp_path / "x")


# ---- gs:// against the local GCS API server


@pytest.mark.gcs
def test_gcs_bytes_text_and_exists(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/runs/r1/note.txt"
    assert not storage.exists(uri)
    storage.write_text(uri, "soft labels ✓")
    assert storage.read_text(uri) == "soft labels ✓"
    storage.write_bytes(f"gs://{gcs_bucket}/empty.bin", b"")
    assert storage.read_bytes(f"gs://{gcs_bucket}/empty.bin") == b""
    assert storage.exists(uri)
    assert storage.exists(f"gs://{gcs_bucket}/runs") and storage.exists(f"gs://{gcs_bucket}/runs/r1/")
    assert not storage.exists(f"gs://{gcs_bucket}/run")
    assert not storage.exists("gs://no-such-bucket-mangadistill/x")


@pytest.mark.gcs
@pytest.mark.parametrize("name", ["soft.parquet", "soft.jsonl"])
def test_gcs_table_round_trip(gcs_bucket: str, name: str) -> None:
    table = _labelled_table()
    uri = f"gs://{gcs_bucket}/tables/{name}"
    storage.write_table(table, uri)
    assert storage.read_table(uri).to_pylist() == table.to_pylist()


@pytest.mark.gcs
def test_gcs_listing_uses_folder_semantics(gcs_bucket: str) -> None:
    names = ["data/b.parquet", "data/a/deep.jsonl", "data2/x.txt", "data", "other/y.txt"]
    for name in names:
        storage.write_bytes(f"gs://{gcs_bucket}/{name}", name.encode())
    expect = [f"gs://{gcs_bucket}/{n}" for n in ("data", "data/a/deep.jsonl", "data/b.parquet")]
    assert storage.list_uris(f"gs://{gcs_bucket}/data") == expect
    assert storage.list_uris(f"gs://{gcs_bucket}/data/") == expect[1:]
    assert storage.list_uris(f"gs://{gcs_bucket}") == sorted(f"gs://{gcs_bucket}/{n}" for n in names)
    assert storage.list_uris(f"gs://{gcs_bucket}/nothing-here") == []


@pytest.mark.gcs
def test_gcs_upload_dir_download_dir_and_local_copy(gcs_bucket: str, tmp_path: Path) -> None:
    contents = _nested_folder(tmp_path / "model", files=12)
    prefix = f"gs://{gcs_bucket}/models/student"
    uploaded = storage.upload_dir(tmp_path / "model", prefix + "/")
    assert uploaded == sorted(f"{prefix}/{relative}" for relative in contents)
    assert storage.list_uris(prefix) == uploaded

    downloaded = storage.download_dir(prefix, tmp_path / "back")
    assert downloaded == sorted(str(tmp_path / "back" / relative) for relative in contents)
    assert {p: (tmp_path / "back" / p).read_bytes() for p in contents} == contents

    folder = Path(storage.local_copy(prefix, cache_dir=str(tmp_path / "cache")))
    assert folder == tmp_path / "cache" / gcs_bucket / "models" / "student"
    assert {p: (folder / p).read_bytes() for p in contents} == contents
    first = sorted(contents)[0]
    single = Path(storage.local_copy(f"{prefix}/{first}"))
    assert single.name == Path(first).name and single.read_bytes() == contents[first]


@pytest.mark.gcs
def test_gcs_large_write_goes_through_a_chunked_resumable_session(
    gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 8 MiB, write_bytes must use a resumable session; 1 MiB chunks make it send ten requests."""
    monkeypatch.setattr(storage, "RESUMABLE_CHUNK_SIZE", 1024 * 1024)
    sessions: list[int | None] = []
    multipart: list[int] = []
    resumable_upload = gcs.Blob._do_resumable_upload
    multipart_upload = gcs.Blob._do_multipart_upload

    def spy_resumable(blob: gcs.Blob, *args: object, **kwargs: object) -> object:
        sessions.append(blob.chunk_size)
        return resumable_upload(blob, *args, **kwargs)

    def spy_multipart(blob: gcs.Blob, *args: object, **kwargs: object) -> object:
        multipart.append(1)
        return multipart_upload(blob, *args, **kwargs)

    monkeypatch.setattr(gcs.Blob, "_do_resumable_upload", spy_resumable)
    monkeypatch.setattr(gcs.Blob, "_do_multipart_upload", spy_multipart)
    payload = os.urandom(storage.RESUMABLE_THRESHOLD + 1024 * 1024 + 123)
    uri = f"gs://{gcs_bucket}/big/weights.bin"

    storage.write_bytes(uri, payload)
    assert sessions == [1024 * 1024] and multipart == []
    assert storage.read_bytes(uri) == payload

    storage.write_bytes(f"gs://{gcs_bucket}/small.bin", b"x" * 1024)
    assert len(sessions) == 1 and multipart == [1]


@pytest.mark.gcs
def test_gcs_missing_object_and_bucket_name_the_uri(gcs_bucket: str, tmp_path: Path) -> None:
    uri = f"gs://{gcs_bucket}/labels/missing.parquet"
    with pytest.raises(ObjectNotFoundError) as caught:
        storage.read_table(uri)
    message = str(caught.value)
    assert uri in message and f"bucket '{gcs_bucket}'" in message and "'labels/missing.parquet'" in message

    with pytest.raises(ObjectNotFoundError, match="bucket 'no-such-bucket-mangadistill' does not exist"):
        storage.read_bytes("gs://no-such-bucket-mangadistill/a.txt")
    with pytest.raises(ObjectNotFoundError, match=rf"gs://{gcs_bucket}/nothing: no files under this folder"):
        storage.download_dir(f"gs://{gcs_bucket}/nothing", tmp_path / "x")
    with pytest.raises(StorageError, match="not an object"):
        storage.read_bytes(f"gs://{gcs_bucket}/folder/")


@pytest.mark.gcs
def test_gcs_corrupt_parquet_names_the_uri(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/corrupt.parquet"
    storage.write_bytes(uri, b"definitely not parquet")
    with pytest.raises(StorageError, match=rf"{uri}: not a readable parquet file"):
        storage.read_table(uri)


def test_jsonl_entries_reads_a_file_or_the_packaged_resource_and_names_a_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n[2]\n{"b": \n')
    with pytest.raises(ValueError, match=rf"{path}: line 4: not valid JSON"):
        storage.jsonl_entries(str(path), "unused", lambda source, line, problem: ValueError(
            f"{source}: line {line}: {problem}"))
    path.write_text('{"a": 1}\n\n[2]\n')
    assert storage.jsonl_entries(str(path), "unused", ValueError) == (str(path), [(1, {"a": 1}), (3, [2])])
    source, entries = storage.jsonl_entries("", "judge_calibration.jsonl", ValueError)
    assert source.endswith("resources/judge_calibration.jsonl") and len(entries) == 47


def test_delete_tree_removes_a_local_folder_or_file_and_ignores_nothing(tmp_path: Path) -> None:
    _nested_folder(tmp_path / "tree", 4)
    (tmp_path / "keep.txt").write_text("x")
    storage.delete_tree(tmp_path / "tree")
    storage.delete_tree(tmp_path / "missing")
    storage.delete_tree(tmp_path / "keep.txt")
    assert list(tmp_path.iterdir()) == []


def test_delete_tree_on_gcs_removes_only_that_folder(tmp_path: Path, gcs_bucket: str) -> None:
    _nested_folder(tmp_path / "src", 4)
    storage.upload_dir(tmp_path / "src", f"gs://{gcs_bucket}/a/run-1")
    storage.upload_dir(tmp_path / "src", f"gs://{gcs_bucket}/a/run-10")  # shares the prefix "a/run-1"
    storage.delete_tree(f"gs://{gcs_bucket}/a/run-1")
    left = storage.list_uris(f"gs://{gcs_bucket}/a")
    assert left and all(uri.startswith(f"gs://{gcs_bucket}/a/run-10/") for uri in left)
    with pytest.raises(StorageError, match="refusing to delete a whole bucket"):
        storage.delete_tree(f"gs://{gcs_bucket}")
