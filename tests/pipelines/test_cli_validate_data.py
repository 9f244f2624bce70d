"""`mangadistill validate-data PIPELINE FILE...`: one verdict per file, naming file, column and first bad row;
exit 2 on bad data."""

import pyarrow as pa

from mangadistill.core import storage
from mangadistill_pipelines.cli import EXIT_BAD_DATA, main


def _write(path, rows: list[dict]) -> str:
    storage.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def test_good_intent_files_are_ok_and_name_the_inputs_they_fit(tmp_path, capsys):
    log = _write(tmp_path / "log.parquet", [{"message_id": "m1", "text": "where is my order?"},
                                            {"message_id": "m2", "text": "recommend a horror manga"}])
    labelled = _write(tmp_path / "eval.csv", [{"message_id": "e1", "text": "refund please", "label": "return_request"}])

    assert main(["validate-data", "intent", log, f"eval_uri={labelled}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{log}: OK as production_log_uri (2 rows)"
    assert out[1] == f"{labelled}: OK as eval_uri (1 rows)"


def test_a_bad_row_and_a_missing_column_are_named_and_exit_2(tmp_path, capsys):
    good = [{"message_id": f"e{i}", "text": "refund please", "label": "return_request"} for i in range(5)]
    bad_label = _write(tmp_path / "eval.jsonl", [*good[:2], {"message_id": "x", "text": "hi", "label": "chit_chat"},
                                                 *good[2:]])
    no_text = _write(tmp_path / "log.parquet", [{"message_id": "m1", "body": "where is my order?"}])

    code = main(["validate-data", "intent", f"eval_uri={bad_label}", no_text])
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_BAD_DATA
    assert out[0] == (f"{bad_label}: BAD: {bad_label}, column 'label', row 2: unknown intent label (1 of 6 rows "
                      "would be quarantined as eval_uri)")
    assert out[1].startswith(f"{no_text}: BAD: {no_text}, column 'text': missing column")
    assert "fits no input" in out[1]


def test_an_unknown_parameter_names_the_inputs_the_pipeline_takes(tmp_path, capsys):
    log = _write(tmp_path / "log.parquet", [{"message_id": "m1", "text": "hello"}])
    assert main(["validate-data", "intent", f"prod_log={log}"]) == EXIT_BAD_DATA
    assert "production_log_uri, eval_uri, handwritten_eval_uri" in capsys.readouterr().err


def test_an_unreadable_file_is_bad_data_not_a_traceback(tmp_path, capsys):
    missing = str(tmp_path / "nowhere.parquet")
    assert main(["validate-data", "reranker", f"eval_candidates_uri={missing}"]) == EXIT_BAD_DATA
    assert missing in capsys.readouterr().out


def test_response_files_are_read_as_their_stage_reads_them(tmp_path, capsys):
    row = {"eval_id": "v1", "slice": "policy", "category": "returns", "prompt": "Can I return a read volume?",
           "reference_response": "Unread volumes only, within 30 days.", "expected_action": "answer", "sku": None}
    eval_set = _write(tmp_path / "eval.jsonl", [row, {**row, "eval_id": "v2", "slice": "sports"}])
    prompts = _write(tmp_path / "prompts.csv", [{"prompt": "Is Vinland Saga finished?"}])  # prompt_id filled in

    assert main(["validate-data", "response", f"eval_uri={eval_set}", prompts]) == EXIT_BAD_DATA
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{eval_set}: BAD: {eval_set}, column 'slice', row 1: ")
    assert out[1] == f"{prompts}: OK as production_prompts_uri (1 rows)"
