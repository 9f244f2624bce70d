"""BM25 retrieval over the catalog: the first stage of the reranker, and the baseline a reranker must beat.

A catalog record is searched by one text, `catalog_document`: title, authors, demographic with its readership,
genres, themes, status, volume count and description. A cross-encoder reranks it by the same text without the
description (`catalog_document(record, description=False)`, about 45 word pieces instead of 75): the relevance
judgments come from those facts only, and a cross-encoder's cost grows with every token it reads.

Tokenisation (`tokenize`): lowercase, every run of letters or digits is a token (so punctuation and hyphens
split words: "sci-fi" -> "sci", "fi"), a small set of stop words dropped, then a light plural strip (a token
of 4+ letters ending in "s" but not "ss" loses the "s": "vampires" -> "vampire"). The same function runs on
documents and queries.

Typo tolerance (`CatalogIndex.normalize_query`): a query token of 4+ characters that is not in the index's
vocabulary is replaced by the vocabulary token one edit away (insert, delete, substitute or swap of two
adjacent letters, found with symmetric single deletes), the most frequent one when several are; a token with
no such neighbour stays as it is (it scores 0).

Scores are BM25 Okapi (rank-bm25 defaults: k1 = 1.5, b = 0.75, idf floored at 0.25 x the mean idf for terms in
more than half of the documents).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rank_bm25 import BM25Okapi

DEMOGRAPHIC_READERSHIP: dict[str, str] = {
    "shonen": "for teen boys",
    "shojo": "for teen girls",
    "seinen": "for adult men",
    "josei": "for adult women",
    "kodomo": "for children",
}
"""The readership each magazine demographic is edited for, written next to it in the document."""

STOP_WORDS = frozenset({
    "a", "an", "and", "any", "are", "as", "at", "be", "but", "by", "for", "from", "i", "im", "in", "is", "it", "me",
    "my", "of", "on", "or", "so", "some", "something", "that", "the", "this", "to", "with", "want", "looking",
    "need", "please", "pls", "manga", "series", "like", "recommend", "suggest",
})
MIN_TYPO_TOKEN_CHARS = 4
_TOKEN = re.compile(r"[a-z0-9]+")


def catalog_document(record: dict, description: bool = True) -> str:
    """The text a catalog record is searched by (description=False: the text a cross-encoder reranks it by).

    "{title}. By {authors}. {demographic} ({readership}). Genres: {genres}. Themes: {themes}.
    {status}, {volumes} volume(s). {description}"
    """
    demographic = str(record["demographic"])
    readership = DEMOGRAPHIC_READERSHIP.get(demographic)
    audience = f"{demographic} ({readership})" if readership else demographic
    volumes = int(record["volumes"])
    parts = [
        f"{record['title']}.",
        f"By {', '.join(record['authors'])}.",
        f"{audience.capitalize()}.",
        f"Genres: {', '.join(record['genres'])}.",
        f"Themes: {', '.join(record['themes'])}." if record["themes"] else "",
        f"{str(record['status']).capitalize()}, {volumes} volume{'s' if volumes != 1 else ''}.",
        str(record["description"]) if description else "",
    ]
    return " ".join(part for part in parts if part)


def _light_stem(token: str) -> str:
    return token[:-1] if len(token) >= 4 and token.endswith("s") and not token.endswith("ss") else token


def tokenize(text: str) -> list[str]:
    """Lowercased alphanumeric runs, stop words dropped, plurals lightly stripped (see the module docstring)."""
    return [_light_stem(token) for token in _TOKEN.findall(text.lower()) if token not in STOP_WORDS]


def _single_deletes(token: str) -> set[str]:
    return {token[:i] + token[i + 1:] for i in range(len(token))}


@dataclass
class CatalogIndex:
    """A BM25 index over catalog records; `search` returns (sku, score) pairs, best first."""

    skus: list[str]
    bm25: BM25Okapi
    token_counts: Counter[str]
    _deletes: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> CatalogIndex:
        """Index `records` (catalog dicts with at least the fields `catalog_document` reads, plus sku)."""
        if not records:
            raise ValueError("records: need at least one catalog record to index")
        skus = [str(record["sku"]) for record in records]
        duplicates = sorted(sku for sku, count in Counter(skus).items() if count > 1)
        if duplicates:
            raise ValueError(f"records: duplicate sku {duplicates[0]!r}")
        corpus = [tokenize(catalog_document(record)) for record in records]
        token_counts: Counter[str] = Counter(token for document in corpus for token in document)
        deletes: dict[str, list[str]] = {}
        for token in token_counts:
            for variant in _single_deletes(token) | {token}:
                deletes.setdefault(variant, []).append(token)
        return cls(skus, BM25Okapi(corpus), token_counts, deletes)

    def _correct(self, token: str) -> str:
        if token in self.token_counts or len(token) < MIN_TYPO_TOKEN_CHARS:
            return token
        neighbours = {match for variant in _single_deletes(token) | {token} for match in self._deletes.get(variant, ())}
        if not neighbours:
            return token
        return max(sorted(neighbours), key=lambda candidate: self.token_counts[candidate])

    def normalize_query(self, query: str) -> list[str]:
        """`tokenize(query)` with out-of-vocabulary tokens corrected to a vocabulary token one edit away."""
        return [self._correct(token) for token in tokenize(query)]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed record for `query`, in index order."""
        return np.asarray(self.bm25.get_scores(self.normalize_query(query)), dtype=np.float64)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The top `k` records as (sku, BM25 score), best first; ties keep catalog order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.skus[i], float(scores[i])) for i in order]


def fill_missing_bm25(query_ids: Sequence[str], queries: Sequence[str], texts: Sequence[str],
                      scores: Sequence[float | None]) -> np.ndarray:
    """`scores` as floats, where every query with a missing (None or NaN) score gets, for all its rows, BM25 Okapi
    over its own candidate texts (`tokenize`, no typo correction): the BM25 baseline of a table that came without
    bm25_score. Queries with every score present keep theirs."""
    values = np.asarray([np.nan if score is None else score for score in scores], dtype=np.float64)
    rows_of: dict[str, list[int]] = {}
    for row, query_id in enumerate(query_ids):
        rows_of.setdefault(query_id, []).append(row)
    for rows in rows_of.values():
        if not np.isnan(values[rows]).any():
            continue
        documents = [tokenize(texts[row]) for row in rows]
        if not any(documents):
            values[rows] = 0.0
            continue
        values[rows] = BM25Okapi(documents).get_scores(tokenize(queries[rows[0]]))
    return values
