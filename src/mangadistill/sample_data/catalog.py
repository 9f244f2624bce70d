"""The MangaAssist sample catalog: real manga series, one JSON object per line in
`mangadistill/resources/catalog.jsonl` (`core.catalog.PACKAGED_CATALOG`).

Series facts (title, authors, demographic, genres, themes, status, volumes) describe real manga. For ongoing
and on-hiatus series, status and the Japanese tankobon volume count are as of mid-2025 (30 June 2025) and go
stale; completed series carry their final count. Demographic follows the original serialising magazine.
Descriptions are original one-line blurbs. The store fields (sku, price_usd, stock) are synthetic.
The contract and its checks are `core.catalog`'s; this module only says where the sample lies.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mangadistill.core import catalog

CATALOG_PATH = catalog.PACKAGED_CATALOG


def load_catalog(path: str | Path | None = None) -> pa.Table:
    """`core.catalog.load_catalog` of `path`, the packaged sample when None."""
    return catalog.load_catalog(CATALOG_PATH if path is None else path)


def catalog_records(path: str | Path | None = None) -> list[dict]:
    """The catalog (the packaged sample when `path` is None) as a list of dicts, in file order."""
    return catalog.catalog_records(CATALOG_PATH if path is None else path)
