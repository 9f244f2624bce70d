import pytest

from mangadistill import storage
from mangadistill.schemas import LABELLED_MESSAGES, MESSAGES, validate_table
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
