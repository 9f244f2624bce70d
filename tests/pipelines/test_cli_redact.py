"""`mangadistill redact FILE [--column text] [--out FILE]`: the redacted table, counts per kind, clear errors."""

import json

import pyarrow as pa

from mangadistill.core import storage
from mangadistill_pipelines.cli import main


def test_redact_writes_the_redacted_table_and_prints_counts_per_kind(tmp_path, capsys):
    source = tmp_path / "prompts.jsonl"
    rows = [{"id": "a", "text": "order MO-20481736 late, mail jane.doe+m@gmail.com", "sku": "MA-00001"},
            {"id": "b", "text": "Is MA-00001 (One Piece) vol 12 still $11.99?", "sku": "MA-00001"},
            {"id": "c", "text": "Thanks, Margaret Okonkwo-Delacroix", "sku": None}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    assert main(["redact", str(source)]) == 0
    out = capsys.readouterr().out
    written = storage.read_table(str(tmp_path / "prompts.redacted.jsonl")).to_pylist()
    assert [row["text"] for row in written] == ["order [ORDER] late, mail [EMAIL]", rows[1]["text"],
                                                "Thanks, [NAME]"]
    assert [row["sku"] for row in written] == ["MA-00001", "MA-00001", None]
    assert "2 of 3 rows changed in column 'text'" in out
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.startswith("  ")}
    assert counts == {"email": 1, "card": 0, "phone": 0, "order": 1, "address": 0, "name": 1}
    assert f"wrote {tmp_path / 'prompts.redacted.jsonl'}" in out
    assert "jane.doe" in source.read_text("utf-8"), "the input is left as it was"


def test_redact_takes_a_column_and_an_out_file_in_another_format(tmp_path, capsys):
    source, target = tmp_path / "log.csv", tmp_path / "clean" / "log.parquet"
    storage.write_table(pa.table({"prompt": ["call (415) 555-0132", "card 4111 1111 1111 1111"], "n": [1, 2]}),
                        str(source))
    assert main(["redact", str(source), "--column", "prompt", "--out", str(target)]) == 0
    assert storage.read_table(str(target)).to_pydict() == {"prompt": ["call [PHONE]", "card [CARD]"], "n": [1, 2]}
    assert "2 of 2 rows changed in column 'prompt'" in capsys.readouterr().out


def test_redact_names_the_file_the_missing_column_and_the_columns_it_has(tmp_path, capsys):
    source = tmp_path / "prompts.parquet"
    storage.write_table(pa.table({"prompt": ["a@b.com"], "id": ["x"]}), str(source))
    assert main(["redact", str(source)]) == 2
    err = capsys.readouterr().err
    assert f"mangadistill redact: error: {source} has no column 'text'; its columns: prompt, id" in err
    assert not (tmp_path / "prompts.redacted.parquet").exists()
    assert main(["redact", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
