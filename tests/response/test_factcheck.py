"""Catalog fact checker: correct answers pass, each kind of wrong claim is found, files are scored."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mangadistill.core import storage
from mangadistill.core.contracts import DataContractError
from mangadistill.response.contracts import FACT_CHECK, FACT_FINDINGS
from mangadistill.response.factcheck import (
    EXIT_OVER_THRESHOLD,
    EXIT_UNREADABLE,
    FINDING_KINDS,
    CatalogIndex,
    check_facts_command,
    check_response,
    check_responses,
    findings_table,
    score_responses_file,
)
from mangadistill.sample_data.catalog import catalog_records
from mangadistill.sample_data.responses import CORRUPTIONS, generate_human_corrected, response_eval_set
from mangadistill_pipelines.cli import main


@pytest.fixture(scope="module")
def catalog() -> CatalogIndex:
    return CatalogIndex(catalog_records())


@pytest.fixture(scope="module")
def corrected() -> list[dict]:
    return generate_human_corrected(600, seed=9)


def test_human_corrected_responses_have_claims_and_no_findings(catalog, corrected):
    table, summary = check_responses([r["response"] for r in corrected], catalog)
    assert summary["hallucination_rate"] == 0.0
    assert summary["findings"] == 0
    assert summary["responses_without_claims"] == 0
    assert min(table.column("n_claims").to_pylist()) >= 1


def test_factuality_references_of_the_eval_set_pass(catalog):
    references = [r["reference_response"] for r in response_eval_set() if r["slice"] == "factuality"]
    _, summary = check_responses(references, catalog)
    assert summary["findings"] == 0 and summary["claims"] >= len(references)


@pytest.mark.parametrize("mistake", CORRUPTIONS)
def test_each_teacher_mistake_is_found_with_its_kind(catalog, corrected, mistake):
    rows = [r for r in corrected if r["mistake"] == mistake]
    assert rows, f"no generated row with mistake {mistake}"
    for row in rows:
        result = check_response(row["teacher_response"], catalog)
        assert mistake in {f.kind for f in result.findings}, row["teacher_response"]


PROSE_FINDINGS = [
    ("Dragon Ball is written by Eiichiro Oda.", "wrong_author", "Akira Toriyama"),
    ("Naruto by John Smith is a classic.", "wrong_author", "Masashi Kishimoto"),
    ("Naruto has 700 volumes.", "wrong_volume_count", "72 volumes"),
    ("Naruto is a great pick. It runs to 60 volumes.", "wrong_volume_count", "72 volumes"),
    ("Death Note costs $99.99 each.", "wrong_price", "$11.99 per volume"),
    ("Orders over $35 ship free, and Death Note is $10.99.", "wrong_price", "$11.99 per volume"),
    ("The full Death Note set is $120 for all 12 volumes.", "wrong_price", "$143.88 for 12 volumes"),
    ("Naruto is in stock.", "wrong_stock", "out of stock"),
    ("Bleach is sold out right now.", "wrong_stock", "in stock (56 left)"),
    ("Bleach: only 3 copies left!", "wrong_stock", "56 in stock"),
    ("One Piece is completed.", "wrong_status", "ongoing"),
    ("Naruto is still ongoing.", "wrong_status", "completed"),
    ("Moonlit Ronin has 12 volumes and is in stock.", "unknown_title", "a title in the catalog"),
    ("Try Moonlit Ronin by Kenta Morikawa.", "unknown_title", "a title in the catalog"),
    ("I'd suggest *Moonlit Ronin* next.", "unknown_title", "a title in the catalog"),
]


@pytest.mark.parametrize(("text", "kind", "expected"), PROSE_FINDINGS)
def test_wrong_claims_in_free_prose_are_found(catalog, text, kind, expected):
    findings = check_response(text, catalog).findings
    assert [(f.kind, f.expected) for f in findings] == [(kind, expected)]


PROSE_SUPPORTED = [
    "Naruto by Masashi Kishimoto has 72 volumes and is out of stock.",
    "One Piece by Eiichiro Oda is still ongoing, with 111 volumes so far.",
    "One Piece is by Oda.",
    "Akira Toriyama wrote Dragon Ball.",
    "Death Note is $11.99 per volume. It is in stock.",
    "Death Note: $143.88 for the full set.",
    "I'll let you know when Naruto is back in stock.",
    "Orders over $35 ship free. Bleach is completed. It has 74 volumes, and 56 left.",
    "You can read the first 3 volumes of Naruto this weekend.",
    "Your order is complete. It should arrive by Friday.",
    "Demon Slayer has 23 volumes. Attack On Titan has 34 volumes.",
    "Haikyu!! has 45 volumes. Dr. Stone has 26 volumes.",
    "*X* by CLAMP has 18 volumes and is on hiatus.",
    "\u201cPok\u00e9mon: The Electric Tale of Pikachu\u201d is a fun one.",
]


@pytest.mark.parametrize("text", PROSE_SUPPORTED)
def test_right_claims_and_non_claims_are_not_findings(catalog, text):
    assert check_response(text, catalog).findings == []


def test_claims_bind_to_the_nearest_title(catalog):
    result = check_response("Naruto is out of stock, but Bleach is in stock. It has 74 volumes.", catalog)
    assert result.claims == 3 and result.findings == []
    swapped = check_response("Naruto is in stock, but Bleach is out of stock.", catalog)
    assert sorted(f.title for f in swapped.findings) == ["Bleach", "Naruto"]


def test_summary_rate_is_share_of_responses_with_a_finding(catalog):
    texts = ["Naruto has 72 volumes.", "Naruto has 71 volumes. It is in stock.", "Hello!", "Bleach is sold out."]
    table, summary = check_responses(texts, catalog, ["a", "b", "c", "d"])
    assert table.schema.equals(FACT_CHECK)
    assert table.column("unsupported").to_pylist() == [False, True, False, True]
    assert summary["hallucination_rate"] == pytest.approx(2 / 4)
    assert summary["findings"] == 3 and summary["findings_wrong_stock"] == 2
    assert set(FINDING_KINDS) <= {k.removeprefix("findings_") for k in summary}
    flat = findings_table(table)
    assert flat.schema.equals(FACT_FINDINGS)
    assert flat.column("response_id").to_pylist() == ["b", "b", "d"]


def _responses_table(corrected: list[dict]) -> pa.Table:
    rows = [{"prompt_id": r["prompt_id"], "response": r["response"]} for r in corrected[:20]]
    rows += [{"prompt_id": f"bad-{r['prompt_id']}", "response": r["teacher_response"]} for r in corrected[:20]]
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_score_responses_file_local(tmp_path, catalog, corrected, suffix):
    uri = str(tmp_path / f"responses.{suffix}")
    storage.write_table(_responses_table(corrected), uri)
    per_row, summary = score_responses_file(uri, catalog)
    assert summary["hallucination_rate"] == pytest.approx(0.5)
    flagged = [rid for rid, bad in zip(per_row.column("response_id").to_pylist(),
                                       per_row.column("unsupported").to_pylist(), strict=True) if bad]
    assert flagged and all(rid.startswith("bad-") for rid in flagged)


def test_score_responses_file_on_gcs(gcs_bucket, catalog, corrected):
    uri = f"gs://{gcs_bucket}/eval/responses.parquet"
    storage.write_table(_responses_table(corrected), uri)
    _, summary = score_responses_file(uri, catalog)
    assert summary["responses"] == 40 and summary["hallucination_rate"] == pytest.approx(0.5)


def test_missing_response_column_names_file_and_column(tmp_path, catalog):
    uri = str(tmp_path / "answers.jsonl")
    (tmp_path / "answers.jsonl").write_text(json.dumps({"answer": "Naruto has 72 volumes."}) + "\n")
    with pytest.raises(DataContractError) as error:
        score_responses_file(uri, catalog)
    assert error.value.source == uri and error.value.column == "response"


def test_check_facts_command_prints_and_writes_findings(tmp_path, capsys, catalog, corrected):
    uri = str(tmp_path / "responses.jsonl")
    storage.write_table(_responses_table(corrected), uri)
    assert check_facts_command(uri, catalog, findings_out=str(tmp_path / "findings.parquet")) == 0
    out = capsys.readouterr().out
    assert "catalog hallucination rate: 50.00%" in out and "empty or null responses: 0" in out
    assert storage.read_table(str(tmp_path / "findings.parquet")).num_rows > 0
    assert check_facts_command(uri, catalog, fail_over=0.5) == 0
    assert check_facts_command(uri, catalog, fail_over=0.49) == EXIT_OVER_THRESHOLD


def _one_hallucination_and_nine_nulls(path) -> None:
    one_piece = next(r for r in catalog_records() if r["title"] == "One Piece")
    rows = [{"response": f"One Piece has {one_piece['volumes'] + 7} volumes."}]
    rows += [{"response": None}] * 5 + [{"response": ""}, {"response": "   "}, {"response": "\n"}, {}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_empty_and_null_responses_are_counted_apart_and_fail_the_check(tmp_path, capsys, catalog):
    path = tmp_path / "answers.jsonl"
    _one_hallucination_and_nine_nulls(path)
    _, summary = score_responses_file(str(path), catalog)
    assert (summary["responses"], summary["responses_with_findings"], summary["empty_responses"]) == (10, 1, 9)
    assert summary["hallucination_rate"] == pytest.approx(0.1) and summary["failure_rate"] == pytest.approx(1.0)
    assert main(["check-facts", str(path), "--fail-over", "0.2"]) == EXIT_OVER_THRESHOLD == 1
    out = capsys.readouterr().out
    assert "empty or null responses: 9" in out and "failure rate 100.00% > --fail-over 20.00%: FAIL" in out


@pytest.mark.parametrize("content", [
    None,  # no such file
    b'{"response": "One Piece has 9 volumes."}\n{"response": \n',  # a torn line
    b'{"answer": "One Piece has 9 volumes."}\n',  # no response column
    b'{"response": "fine"}\n{"response": NaN}\n',
    b"PAR1 not really parquet",
    b"",
])
def test_unreadable_input_exits_2_never_the_fail_over_code(tmp_path, capsys, content):
    path = tmp_path / ("answers.parquet" if content and content.startswith(b"PAR1") else "answers.jsonl")
    if content is not None:
        path.write_bytes(content)
    assert main(["check-facts", str(path), "--fail-over", "0.2"]) == EXIT_UNREADABLE == 2
    assert f"mangadistill check-facts: error: {path}" in capsys.readouterr().err
