"""BM25 catalog retrieval: document text, tokenisation, typo tolerance, ranking."""

from __future__ import annotations

import pytest

from mangadistill.core.retrieval import CatalogIndex, catalog_document, tokenize
from mangadistill.sample_data.catalog import catalog_records


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return catalog_records()


@pytest.fixture(scope="module")
def index(records) -> CatalogIndex:
    return CatalogIndex.from_records(records)


def _title(records, sku: str) -> str:
    return next(r["title"] for r in records if r["sku"] == sku)


def test_catalog_document_carries_every_searchable_fact(records):
    record = records[0]
    document = catalog_document(record)
    for value in [record["title"], *record["authors"], *record["genres"], *record["themes"], record["description"]]:
        assert value in document
    assert record["demographic"].capitalize() in document and "(for " in document
    assert f"{record['volumes']} volume" in document and record["status"].capitalize() in document


def test_tokenize_lowercases_splits_punctuation_drops_stop_words_and_plurals():
    assert tokenize("Sci-Fi manga with VAMPIRES, please!") == ["sci", "fi", "vampire"]
    assert tokenize("class boss") == ["class", "boss"]  # "ss" endings keep their s


def test_exact_title_and_author_queries_rank_that_series_first(index, records):
    for record in records[:20]:
        top_sku, _ = index.search(f"{record['title']} {record['authors'][0]}", 1)[0]
        assert top_sku == record["sku"], (record["title"], _title(records, top_sku))


def test_search_returns_k_results_best_first(index, records):
    hits = index.search("dark fantasy revenge", 12)
    scores = [score for _, score in hits]
    assert len(hits) == 12 and scores == sorted(scores, reverse=True)
    assert len({sku for sku, _ in hits}) == 12
    assert len(index.search("horror", len(records) + 5)) == len(records)


def test_typos_are_corrected_to_a_vocabulary_word_one_edit_away(index):
    assert index.normalize_query("romacne vampries horor") == ["romance", "vampire", "horror"]
    assert index.search("romacne for adult womne", 5) == index.search("romance for adult women", 5)
    assert index.normalize_query("zzqxv") == ["zzqxv"]  # nothing one edit away: kept, scores 0


def test_invalid_inputs_are_refused(index, records):
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search("horror", 0)
    with pytest.raises(ValueError, match="at least one"):
        CatalogIndex.from_records([])
    with pytest.raises(ValueError, match="duplicate sku 'MA-00001'"):
        CatalogIndex.from_records([records[0], records[0]])
