"""Storage that takes a local path or a gs:// URI everywhere.

Every function accepts a local path or `gs://BUCKET/OBJECT`. A missing file or object raises
`ObjectNotFoundError` naming the URI (for gs://, the bucket and the object); any other I/O or format problem
raises `StorageError` naming the URI and what was tried. "Folders" on GCS are object-name prefixes ending in
"/": `gs://b/model` as a folder holds `gs://b/model/config.json`, never `gs://b/model2/x`.

GCS goes through one cached `google.cloud.storage.Client` per value of STORAGE_EMULATOR_HOST: anonymous
credentials against an emulator (the library reads the variable itself), application default credentials
otherwise. Objects over RESUMABLE_THRESHOLD bytes are uploaded through a resumable session in chunks.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from google.api_core.exceptions import GoogleAPIError, NotFound
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import storage as gcs
from tqdm import tqdm

Uri = str | os.PathLike[str]
log = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
EMULATOR_PROJECT = "mangadistill-local"
"""Project used against STORAGE_EMULATOR_HOST when GOOGLE_CLOUD_PROJECT is unset."""
RESUMABLE_THRESHOLD = 8 * 1024 * 1024
"""Uploads larger than this (the library's multipart limit) go through a resumable session."""
RESUMABLE_CHUNK_SIZE = 16 * 1024 * 1024
"""Bytes sent per request of a resumable upload; GCS needs a multiple of 256 KiB."""
PROGRESS_MIN_FILES = 10
"""upload_dir / download_dir show a tqdm bar (on a TTY) from this many files on."""
TABLE_FORMATS = ("parquet", "jsonl", "csv")
_SUFFIX_FORMATS = {
    ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
}

_Item = TypeVar("_Item")


class StorageError(OSError):
    """Reading or writing a local path or gs:// URI failed; the message names the URI."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The local file or GCS object does not exist; the message names the URI (and the bucket and object)."""


def is_gcs(uri: Uri) -> bool:
    """True for a `gs://` URI, False for a local path."""
    return os.fspath(uri).startswith(GCS_SCHEME)


@functools.cache
def _client_for(emulator_host: str | None) -> gcs.Client:
    if emulator_host:
        project = os.environ.get("GOOGLE_CLOUD_PROJECT", EMULATOR_PROJECT)
        return gcs.Client(project=project, credentials=AnonymousCredentials())
    return gcs.Client()


def _client() -> gcs.Client:
    """The client for the current STORAGE_EMULATOR_HOST, created on first use and cached."""
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST") or None)


def _split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> ("bucket", "a/b")."""
    bucket, _, name = uri[len(GCS_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket name (gs://BUCKET/OBJECT)")
    return bucket, name


def _blob(uri: str) -> gcs.Blob:
    bucket, name = _split_gcs(uri)
    if not name or name.endswith("/"):
        raise StorageError(f"{uri}: names a bucket or folder, not an object")
    return _client().bucket(bucket).blob(name)


def _gcs_not_found_message(uri: str) -> str:
    bucket, name = _split_gcs(uri)
    try:
        bucket_exists = _client().bucket(bucket).exists()
    except GoogleAPIError:  # e.g. no permission to look at the bucket: report the object
        bucket_exists = True
    if not bucket_exists:
        return f"{uri}: bucket '{bucket}' does not exist (looking for object '{name}')"
    return f"{uri}: no object '{name}' in bucket '{bucket}'"


@contextlib.contextmanager
def _storage_errors(uri: str) -> Iterator[None]:
    """Turn local and GCS failures into ObjectNotFoundError / StorageError naming `uri`."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise ObjectNotFoundError(f"{uri}: no such file ({exc.filename})") from exc
    except NotFound as exc:
        raise ObjectNotFoundError(_gcs_not_found_message(uri)) from exc
    except (OSError, GoogleAPIError, GoogleAuthError) as exc:
        raise StorageError(f"{uri}: {exc}") from exc


def _upload(stream: BinaryIO, size: int, uri: str) -> None:
    blob = _blob(uri)
    if size > RESUMABLE_THRESHOLD:
        blob.chunk_size = RESUMABLE_CHUNK_SIZE  # a chunked resumable session, whatever the library version
    blob.upload_from_file(stream, size=size)


def upload_file(path: Path, uri: str) -> None:
    """Copy the local file `path` to `uri` (gs:// or local)."""
    with _storage_errors(uri):
        if is_gcs(uri):
            with path.open("rb") as stream:
                _upload(stream, path.stat().st_size, uri)
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, uri)


def _get_file(uri: str, path: Path) -> None:
    """Copy the file or object `uri` to the local file `path`, creating its folder."""
    with _storage_errors(uri):
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_gcs(uri):
            _blob(uri).download_to_filename(str(path))
        else:
            shutil.copyfile(uri, path)


def read_bytes(uri: Uri) -> bytes:
    """The whole file or object."""
    uri = os.fspath(uri)
    with _storage_errors(uri):
        return _blob(uri).download_as_bytes() if is_gcs(uri) else Path(uri).read_bytes()


def write_bytes(uri: Uri, data: bytes) -> None:
    """Write `data` to the file or object, replacing it; local parent folders are created."""
    uri = os.fspath(uri)
    with _storage_errors(uri):
        if is_gcs(uri):
            _upload(io.BytesIO(data), len(data), uri)
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(data)


def read_text(uri: Uri) -> str:
    """The whole file or object, decoded as UTF-8."""
    uri = os.fspath(uri)
    try:
        return read_bytes(uri).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{uri}: not UTF-8 text (byte {exc.start})") from exc


def write_text(uri: Uri, text: str) -> None:
    """Write `text` as UTF-8, replacing the file or object."""
    write_bytes(uri, text.encode("utf-8"))


def exists(uri: Uri) -> bool:
    """True if `uri` is an existing file or folder (for gs://: an object, or a prefix `uri/` with objects)."""
    uri = os.fspath(uri)
    if not is_gcs(uri):
        return Path(uri).exists()
    bucket, name = _split_gcs(uri)
    folder = name.rstrip("/") + "/" if name else ""
    with _storage_errors(uri):
        if name and not name.endswith("/") and _client().bucket(bucket).blob(name).exists():
            return True
        try:
            return any(True for _ in _client().list_blobs(bucket, prefix=folder, max_results=1))
        except NotFound:  # no such bucket
            return False


def usable_folder(uri: str, purpose: str) -> bool:
    """True when `uri` names a folder this module reads and writes: a local path or gs://. An unresolved KFP
    placeholder (`{{$.pipeline_root}}` on a backend that does not fill it in) or another scheme (minio://,
    s3://) is False, with a warning that says what `purpose` loses."""
    if "{{$." in uri or ("://" in uri and not is_gcs(uri)):
        log.warning("%s: %s needs a local folder or gs://; it goes without", uri, purpose)
        return False
    return True


def make_readable(folder: Uri) -> None:
    """Every file under the local `folder` readable by all (0644): transformers writes weights 0600, and the
    stage images run as other users than the task that wrote them."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(0o644)


def delete_tree(uri: Uri) -> None:
    """Remove the file or folder `uri` (for gs://: the object and every object under `uri/`); nothing there is
    not an error."""
    uri = os.fspath(uri)
    if not is_gcs(uri):
        path = Path(uri)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return
    bucket, name = _split_gcs(uri)
    if not name.strip("/"):
        raise StorageError(f"{uri}: refusing to delete a whole bucket")
    with _storage_errors(uri):
        for blob in _client().list_blobs(bucket, prefix=name):
            if blob.name == name or blob.name.startswith(name.rstrip("/") + "/"):
                blob.delete()


def list_uris(prefix: Uri) -> list[str]:
    """Every file under `prefix`, recursively, sorted: `prefix` itself if it names a file or object, else the
    files in the folder `prefix/` (`gs://bucket` lists the whole bucket). Nothing there gives []."""
    prefix = os.fspath(prefix)
    if not is_gcs(prefix):
        root = Path(prefix)
        if root.is_file():
            return [prefix]
        return sorted(str(path) for path in root.rglob("*") if path.is_file())
    bucket, name = _split_gcs(prefix)
    folder = name.rstrip("/") + "/" if name else ""
    with _storage_errors(prefix):
        names = [blob.name for blob in _client().list_blobs(bucket, prefix=name)]
    return sorted(
        f"{GCS_SCHEME}{bucket}/{object_name}"
        for object_name in names
        if (object_name == name or object_name.startswith(folder)) and not object_name.endswith("/")
    )


def _progress(items: Sequence[_Item], description: str) -> Iterable[_Item]:
    """`items` with a tqdm bar when there are many (tqdm hides it when stderr is not a TTY)."""
    show = len(items) >= PROGRESS_MIN_FILES
    return tqdm(items, desc=description, unit="file", disable=None if show else True)


def _join(uri: str, relative: str) -> str:
    return f"{uri.rstrip('/')}/{relative}" if is_gcs(uri) else str(Path(uri) / relative)


def upload_dir(local_dir: Uri, uri: Uri) -> list[str]:
    """Copy every file under the local folder `local_dir` to `uri/<relative path>` (a gs:// prefix or a local
    folder); returns the URIs written, sorted."""
    root, uri = Path(local_dir), os.fspath(uri)
    if not root.is_dir():
        raise ObjectNotFoundError(f"{local_dir}: no such local folder")
    files = sorted(path for path in root.rglob("*") if path.is_file())
    written = []
    for path in _progress(files, f"upload to {uri}"):
        destination = _join(uri, path.relative_to(root).as_posix())
        upload_file(path, destination)
        written.append(destination)
    return written


def download_dir(uri: Uri, local_dir: Uri) -> list[str]:
    """Copy every file under the folder `uri` (a gs:// prefix or a local folder) into `local_dir`, keeping
    relative paths; returns the local paths written, sorted. An empty or missing folder raises."""
    uri, root = os.fspath(uri), Path(local_dir)
    if is_gcs(uri):
        folder = uri.rstrip("/") + "/"
        relatives = [source[len(folder) :] for source in list_uris(folder)]
    elif Path(uri).is_dir():
        relatives = [Path(source).relative_to(uri).as_posix() for source in list_uris(uri)]
    else:
        raise ObjectNotFoundError(f"{uri}: no such folder")
    if not relatives:
        raise ObjectNotFoundError(f"{uri}: no files under this folder")
    written = []
    for relative in _progress(relatives, f"download {uri}"):
        if relative.startswith("/") or ".." in PurePosixPath(relative).parts:
            raise StorageError(f"{_join(uri, relative)}: the name leads out of the target folder {root}")
        _get_file(_join(uri, relative), root / relative)
        written.append(str(root / relative))
    return written


def local_copy(uri: Uri, cache_dir: str | None = None) -> str:
    """A local path holding the file or folder `uri`: `uri` itself when local (it must exist); for gs://, a
    fresh download to `cache_dir/<bucket>/<object>` (cache_dir defaults to a new temporary folder)."""
    uri = os.fspath(uri)
    if not is_gcs(uri):
        if not Path(uri).exists():
            raise ObjectNotFoundError(f"{uri}: no such file or folder")
        return uri
    bucket, name = _split_gcs(uri)
    name = name.rstrip("/")
    target = Path(cache_dir or tempfile.mkdtemp(prefix="mangadistill-")) / bucket / name
    object_uri = f"{GCS_SCHEME}{bucket}/{name}"
    with _storage_errors(uri):
        is_object = bool(name) and _blob(object_uri).exists()
    if is_object:
        _get_file(object_uri, target)
    else:
        download_dir(uri, target)
    return str(target)


def read_text_or_resource(uri: str | None, resource: str) -> tuple[str, str]:
    """(text, source) of the file at `uri` (local or gs://), or of the packaged `mangadistill/resources/<resource>`
    when uri is empty or None; `source` names where the text came from, for error messages."""
    if uri:
        return read_text(uri), str(uri)
    return (resources.files("mangadistill.resources").joinpath(resource).read_text(encoding="utf-8"),
            f"mangadistill/resources/{resource}")


def jsonl_entries(uri: str, packaged: str, bad_line: Callable[[str, int, str], Exception]
                  ) -> tuple[str, list[tuple[int, object]]]:
    """(source, [(1-based line, parsed JSON value)]) of the JSONL file at `uri` (local or gs://), or of the
    packaged resource `mangadistill/resources/<packaged>` when uri is empty (`read_text_or_resource`); blank lines
    skipped. A line that is not JSON raises `bad_line(source, line, problem)`."""
    text, source = read_text_or_resource(uri, packaged)
    entries = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entries.append((line, json.loads(raw)))
        except json.JSONDecodeError as error:
            raise bad_line(source, line, f"not valid JSON: {error.msg}") from error
    return source, entries


def _table_format(uri: str, fmt: str | None) -> str:
    """`fmt`, or the format the suffix names; parquet for unknown suffixes (KFP artifact paths have none)."""
    if fmt is None:
        return _SUFFIX_FORMATS.get(PurePosixPath(uri).suffix.lower(), "parquet")
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"unknown table format {fmt!r} for {uri}; use one of {', '.join(TABLE_FORMATS)}")
    return fmt


class _NonFinite(str):
    """What a NaN, Infinity or -Infinity literal parses to, so the row can name its column."""


def _holds_non_finite(value: object) -> bool:
    if isinstance(value, _NonFinite):
        return True
    if isinstance(value, list):
        return any(_holds_non_finite(item) for item in value)
    return isinstance(value, dict) and any(_holds_non_finite(item) for item in value.values())


def _first_unfit(values: list[object]) -> int:
    """Index of the first value pyarrow cannot put in one array with the values before it (a prefix that
    cannot be converted stays so when values are added, so a binary search finds it)."""
    fits, fails = 0, len(values)
    while fails - fits > 1:
        middle = (fits + fails) // 2
        try:
            pa.array(values[:middle])
            fits = middle
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fails = middle
    return fails - 1


def _parse_jsonl(uri: str, data: bytes) -> pa.Table:
    """One JSON object per line (a UTF-8 BOM and blank lines skipped); columns in first-seen order, None where
    absent. A NaN/Infinity literal, or a value whose type clashes with the column's values before it (an int
    id among string ids), raises StorageError naming the file, the column and the line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{uri}: not a jsonl file (not UTF-8 at byte {exc.start})") from exc
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is legal in JSON
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_NonFinite)
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg}, column {exc.colno})"
            raise StorageError(f"{uri}, line {number}: {problem}") from exc
        if not isinstance(row, dict):
            raise StorageError(f"{uri}, line {number}: expected a JSON object, got {type(row).__name__}")
        if ("NaN" in line or "Infinity" in line) and (
                column := next((key for key, value in row.items() if _holds_non_finite(value)), None)) is not None:
            raise StorageError(f"{uri}, column '{column}', line {number}: NaN and Infinity are not JSON numbers;"
                               " write null for a missing value")
        rows.append(row)
        lines.append(number)
    columns = {}
    for column in dict.fromkeys(key for row in rows for key in row):
        values = [row.get(column) for row in rows]
        try:
            columns[column] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            bad = _first_unfit(values)
            raise StorageError(f"{uri}, column '{column}', line {lines[bad]}: value {values[bad]!r} does not fit "
                               f"the type of the values before it ({exc})") from exc
    return pa.table(columns)


def read_table(uri: Uri, fmt: str | None = None) -> pa.Table:
    """Read a parquet, jsonl or csv table; the format is `fmt`, else the suffix's, else parquet."""
    uri = os.fspath(uri)
    fmt = _table_format(uri, fmt)
    data = read_bytes(uri)
    if fmt == "jsonl":
        return _parse_jsonl(uri, data)
    try:
        if fmt == "csv":
            return pa_csv.read_csv(pa.BufferReader(data))
        return pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise StorageError(f"{uri}: not a readable {fmt} file ({exc})") from exc


def write_table(table: pa.Table, uri: Uri, fmt: str | None = None) -> None:
    """Write `table` as parquet (keeps the schema and its metadata), jsonl (one object per row) or csv; the
    format is `fmt`, else the suffix's, else parquet. Local parent folders are created."""
    uri = os.fspath(uri)
    fmt = _table_format(uri, fmt)
    try:
        if fmt == "jsonl":
            data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()).encode()
        else:
            sink = pa.BufferOutputStream()
            if fmt == "csv":
                pa_csv.write_csv(table, sink)
            else:
                pq.write_table(table, sink)
            data = sink.getvalue().to_pybytes()
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise StorageError(f"{uri}: cannot write the table as {fmt} ({exc})") from exc
    write_bytes(uri, data)
