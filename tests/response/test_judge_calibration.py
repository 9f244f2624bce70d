"""The judge is checked on hand-judged pairs before its preference match is trusted (response/gate/calibration)."""

import json

import pytest
from fakes import FakeChatServer, calibration_oracle

from mangadistill.core.chat_api import ChatClient
from mangadistill.core.contracts import DataContractError
from mangadistill.core.gates import load_gates, packaged_gates_path
from mangadistill.response.gate.calibration import (
    calibrate_judge,
    cohens_kappa,
    judge_trusted,
    load_judge_calibration,
)

PAIRS = load_judge_calibration()


def test_the_packaged_set_is_the_hand_judged_one():
    assert len(PAIRS) == 47 and len({pair.pair_id for pair in PAIRS}) == 47
    assert sorted(pair.preferred for pair in PAIRS).count("a") == 22
    assert sum(pair.preferred == "b" for pair in PAIRS) == 22 and sum(pair.preferred == "tie" for pair in PAIRS) == 3


def test_a_bad_entry_is_named_with_its_line_and_field(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = {"pair_id": "p1", "prompt": "q", "answer_a": "x", "answer_b": "y", "preferred": "a"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "pair_id": "p2", "preferred": "A?"}) + "\n")
    with pytest.raises(DataContractError, match=r"preferred.*2|2.*preferred"):
        load_judge_calibration(str(path))
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer_b": " "}) + "\n")
    with pytest.raises(DataContractError, match=r"answer_b"):
        load_judge_calibration(str(path))


def test_cohens_kappa_against_hand_worked_figures():
    assert cohens_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    # p_o = 0.5, p_e = 0.5·0.5 + 0.5·0.5 = 0.5: chance agreement only
    assert cohens_kappa(["a", "b", "a", "b"], ["a", "a", "b", "b"]) == 0.0
    # p_o = 4/6, p_e = (3·3 + 3·3) / 36 = 0.5: κ = (2/3 − 1/2) / (1/2) = 1/3
    assert cohens_kappa(list("aaabbb"), list("aabbba")) == pytest.approx(1 / 3)
    assert cohens_kappa(["a"] * 5, ["tie"] * 5) == 0.0


def _judge(reply):
    server = FakeChatServer(reply=reply)
    return server, ChatClient(server.base_url, "judge-model", max_retries=0, concurrency=4, timeout_s=5,
                              backoff_base_s=0.01, backoff_max_s=0.02)


def test_a_judge_that_agrees_with_the_person_is_trusted():
    def no_other_prompt(prompt: str) -> str:
        raise AssertionError(f"not a calibration pair: {prompt[:80]}")

    oracle = calibration_oracle(no_other_prompt)
    server, client = _judge(oracle)
    try:
        calibration = calibrate_judge(client, PAIRS)
    finally:
        server.close()
    metrics = calibration.metrics()
    assert metrics["judge_calibration_kappa"] == 1.0 and metrics["judge_calibration_order_consistency"] == 1.0
    assert metrics["judge_calibration_pairs"] == 47 and metrics["judge_calibration_failed_judgments"] == 0
    assert judge_trusted(load_gates(packaged_gates_path("response")), metrics) == (True, "")


def test_a_judge_that_picks_a_position_is_not_trusted_and_says_why():
    server, client = _judge(lambda prompt: json.dumps({"winner": "A"}))
    try:
        calibration = calibrate_judge(client, PAIRS[:12])
    finally:
        server.close()
    metrics = calibration.metrics()
    assert calibration.choices == ["tie"] * 12, "a verdict that flips with the order says it cannot tell"
    assert metrics["judge_calibration_position_a_share"] == 1.0 and metrics["judge_calibration_order_consistency"] == 0
    trusted, why = judge_trusted(load_gates(packaged_gates_path("response")), metrics)
    assert not trusted and why.startswith(f"judge unreliable: κ={metrics['judge_calibration_kappa']:.2f} on 12 ")
    assert "order_consistency" in why
