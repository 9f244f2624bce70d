import json
import subprocess
import sys
import urllib.request

import pytest

from conftest import free_port, wait_until_answering
from mangadistill.core import storage
from mangadistill.core.contracts import validate_table
from mangadistill.intent.contracts import LABELLED_MESSAGES, MESSAGES
from mangadistill_pipelines.cli import main


def test_data_writes_every_split_and_the_catalog(tmp_path, capsys):
    code = main(["data", "--workdir", str(tmp_path), "--n-labelled", "60", "--n-production", "80", "--n-eval", "40"])
    assert code == 0
    data = tmp_path / "data"
    labelled = validate_table(storage.read_table(str(data / "intent_labelled.parquet")), LABELLED_MESSAGES, "l")
    log = validate_table(storage.read_table(str(data / "intent_production_log.parquet")), MESSAGES, "p")
    assert labelled.table.num_rows == 60 and labelled.quarantine.num_rows == 0
    assert log.table.num_rows == 80 and "label" not in storage.read_table(str(data / "intent_production_log.parquet"))
    assert storage.read_table(str(data / "catalog.parquet")).num_rows >= 150
    assert "intent_eval.parquet" in capsys.readouterr().out


def test_bad_param_and_bad_teacher_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["run", "intent", "--workdir", str(tmp_path), "--param", "beta"])
    main(["data", "--workdir", str(tmp_path), "--n-labelled", "20", "--n-production", "20", "--n-eval", "20"])
    code = main(["run", "intent", "--workdir", str(tmp_path), "--teacher", "hub-org/some-model"])
    assert code == 2
    err = capsys.readouterr().err
    assert "hub-org/some-model" in err and "gs://" in err


def test_run_checks_every_param_before_any_data_or_teacher(tmp_path, capsys):
    code = main(["run", "reranker", "--workdir", str(tmp_path), "--param", "top_kk=5", "--param", "epochs=two"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown parameter top_kk (did you mean top_k?)" in err and "epochs='two' is not a NUMBER_INTEGER" in err
    assert not any(tmp_path.iterdir()), "nothing was generated or bootstrapped before the check"

    code = main(["run", "intent", "--workdir", str(tmp_path), "--param", "teacher_model=hub-org/some-model"])
    assert code == 2 and "hub-org/some-model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_params_lists_names_types_and_defaults(capsys):
    assert main(["params", "reranker"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["top_k"][0] == "NUMBER_INTEGER" and rows["teacher_model"][0] == "STRING"
    assert rows["production_candidates_uri"][1] == "(required)"
    assert "intent" not in out.splitlines()[0]


def test_serve_teacher_answers_chat_completions_over_http(tmp_path):
    from mangadistill.core.models import resolve_model

    resolve_model("smollm2-135m")  # converts the GGUF once (about a minute) before the server's clock starts
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mangadistill_pipelines.cli", "serve-teacher", "--port", str(port),
             "--max-new-tokens", "8"], stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{base}/healthz", server, log_path, "serve-teacher", timeout_s=60)
        body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Recommend one manga."}]}
        request = urllib.request.Request(f"{base}/v1/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["choices"][0]["message"]["content"].strip()
        assert 0 < answer["usage"]["completion_tokens"] <= 8
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_check_facts_scores_a_responses_file_and_can_fail_a_ci_job(tmp_path, capsys):
    from mangadistill.sample_data.catalog import catalog_records

    one_piece = next(r for r in catalog_records() if r["title"] == "One Piece")
    rows = [{"response": f"One Piece by {one_piece['authors'][0]} has {one_piece['volumes']} volumes."},
            {"response": f"One Piece has {one_piece['volumes'] + 7} volumes."}]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    findings = tmp_path / "findings.parquet"
    assert main(["check-facts", str(path), "--findings-out", str(findings)]) == 0
    assert "50.00%" in capsys.readouterr().out
    table = storage.read_table(str(findings))
    assert table.num_rows >= 1 and set(table.column("row").to_pylist()) == {1}
    assert main(["check-facts", str(path), "--fail-over", "0.04"]) == 1


def test_the_cli_knows_every_pipeline_with_a_demo():
    from mangadistill_pipelines.cli import PIPELINE_NAMES
    from mangadistill_pipelines.demo import demo_pipelines

    assert set(PIPELINE_NAMES) == set(demo_pipelines())


def test_bootstrap_of_a_pipeline_without_a_demo_teacher_is_a_clear_error(tmp_path, capsys):
    assert main(["bootstrap-teacher", "response", "--workdir", str(tmp_path)]) == 2
    assert "has no demo teacher" in capsys.readouterr().err
