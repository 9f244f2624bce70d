"""`mangadistill review`: the review page's session, HTTP contract and a real headless Chromium clicking through a
packet, closing, resuming, and the gate scoring the file it wrote."""

import json
import random
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mangadistill.core import storage
from mangadistill.response.gate.review import build_review_packet, score_human_reviews, wilson_interval
from mangadistill.response.gate.review_server import ReviewRejected, ReviewServer, ReviewSession, default_out
from mangadistill_pipelines.cli import build_parser, main

SCRIPT_ANSWER = '<script>document.title = "pwned"</script><b>Volume 3</b> ships & costs < $10'
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


POST = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@pytest.fixture
def packet(tmp_path):
    """(packet uri, key table, the packet's rows by packet_id): 4 pairs, one answer holding a <script>."""
    eval_rows = [{"eval_id": f"ev-{i}", "slice": slice_name, "prompt": f"Question {i}: is volume {i} out?"}
                 for i, slice_name in enumerate(("policy", "escalation", "factuality", "general"))]
    student = [SCRIPT_ANSWER, *(f"student answer {i}" for i in range(1, 4))]
    base = [f"base answer {i}" for i in range(4)]
    table, key = build_review_packet(eval_rows, student, base, seed=1)
    uri = str(tmp_path / "review_packet.parquet")
    storage.write_table(table, uri)
    return uri, key, {row["packet_id"]: row for row in table.to_pylist()}


def _swapping_rng(swaps: list[bool]) -> random.Random:
    """A seeded RNG whose first draws (random() < 0.5: shown swapped) are exactly `swaps`."""
    for seed in range(1000):
        probe = random.Random(seed)
        if [probe.random() < 0.5 for _ in swaps] == swaps:
            return random.Random(seed)
    raise AssertionError(f"no seed below 1000 draws {swaps}")


def _post(url: str, form: dict[str, str]) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with POST.open(urllib.request.Request(url + "review", data=data, method="POST"), timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_shown_choices_map_back_to_the_packet_and_the_gate_scores_the_file(tmp_path, packet):
    uri, key, pairs = packet
    out = tmp_path / "reviews" / "completed.jsonl"
    session = ReviewSession(uri, str(out), "ana", rng=_swapping_rng([True, False, True, False]))
    made = []
    for shown in ("a", "a", "both_bad", "tie"):
        packet_id, prompt, first, _ = session.next_pair()
        assert prompt == pairs[packet_id]["prompt"]
        row = session.record({"token": session.token, "packet_id": packet_id, "choice": shown,
                              "note": "  checked the price  " if shown == "both_bad" else ""})
        made.append((packet_id, first, row))
    assert session.next_pair() is None
    for packet_id, first, row in made:  # the choice names the packet answer that was shown on the A side
        shown_is_packet_a = first == pairs[packet_id]["answer_a"]
        assert row["shown_order"] == ("ab" if shown_is_packet_a else "ba")
    assert [row["choice"] for _, _, row in made] == ["b", "a", "both_bad", "tie"]  # the first was shown swapped
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == [row for _, _, row in made]
    assert written[2]["note"] == "checked the price" and written[0]["note"] is None
    assert {row["reviewer"] for row in written} == {"ana"}

    result = score_human_reviews(str(out), key)
    assert result.reviews == 4 and result.quarantine.num_rows == 0 and result.both_bad == 1 and result.ties == 1
    models = {k["packet_id"]: k for k in key.to_pylist()}
    first_winner = models[made[0][0]]["model_b"]  # choice "b" on the first pair
    second_winner = models[made[1][0]]["model_a"]
    expected = ((first_winner == "student") + (second_winner == "student") + 0.5 + 0.5) / 4
    assert result.win_rate == pytest.approx(expected)
    assert result.win_rate_low < result.win_rate < result.win_rate_high
    assert result.status.startswith(f"complete: win rate {expected:.3f} (95% interval ")
    assert "from 4 reviews of 4 packets" in result.status


def test_wilson_interval_known_values():
    assert wilson_interval(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(1.0, 4) == pytest.approx((0.5101, 1.0), abs=1e-4)  # never past 1, never a point
    assert wilson_interval(0.0, 100)[0] == 0.0


def test_resume_skips_this_reviewers_pairs_and_refuses_another_packets_file(tmp_path, packet):
    uri, _, _ = packet
    out = tmp_path / "reviews.jsonl"
    first = ReviewSession(uri, str(out), "ana")
    packet_id = first.next_pair()[0]
    first.record({"token": first.token, "packet_id": packet_id, "choice": "a"})
    again = ReviewSession(uri, str(out), "ana")
    assert again.reviewed == {packet_id} and again.next_pair()[0] != packet_id and again.token != first.token
    assert ReviewSession(uri, str(out), "ben").next_pair()[0] == packet_id  # another reviewer starts afresh
    with pytest.raises(ReviewRejected, match="already reviewed") as rejected:
        again.record({"token": again.token, "packet_id": packet_id, "choice": "b"})
    assert rejected.value.status == 409

    foreign = tmp_path / "other.jsonl"
    foreign.write_text(json.dumps({"packet_id": "pk-000000000000", "choice": "a", "reviewer": "ana"}) + "\n")
    with pytest.raises(ValueError, match=r"1 packet_ids not in this packet .*'pk-000000000000'"):
        ReviewSession(uri, str(foreign), "ana")
    with pytest.raises(ValueError, match=r"must be a local \.jsonl file"):
        ReviewSession(uri, str(tmp_path / "reviews.csv"), "ana")
    assert default_out(uri) == str(Path(uri).with_name("completed_reviews.jsonl"))


def test_http_rejects_bad_forms_and_escapes_the_answers(tmp_path, packet):
    uri, _, pairs = packet
    session = ReviewSession(uri, str(tmp_path / "reviews.jsonl"), "ana")
    with ReviewServer(session) as server:
        assert server.url.startswith("http://127.0.0.1:")
        pages = {}
        for number in range(len(pairs)):  # show every pair, review all but the last
            packet_id = session.next_pair()[0]
            with NO_PROXY.open(server.url, timeout=10) as reply:
                pages[packet_id] = (reply.read().decode(), dict(reply.headers))
            if number < len(pairs) - 1:
                assert _post(server.url, {"token": session.token, "packet_id": packet_id, "choice": "tie"})[0] == 303
        script_id = next(pid for pid, row in pairs.items() if SCRIPT_ANSWER in (row["answer_a"], row["answer_b"]))
        page, headers = pages[script_id]
        assert "<script>document.title" not in page and "&lt;script&gt;document.title" in page
        assert "&amp; costs &lt; $10" in page and "script-src 'sha256-" in headers["Content-Security-Policy"]
        assert page.count("<script>") == 1  # the page's own shortcut script only

        last = session.next_pair()[0]
        good = {"token": session.token, "packet_id": last, "choice": "b"}
        status, body = _post(server.url, {**good, "packet_id": "pk-ffffffffffff"})
        assert status == 400 and "unknown packet_id 'pk-ffffffffffff'" in body
        status, body = _post(server.url, {**good, "choice": "left"})
        assert status == 400 and "bad choice 'left'" in body
        assert _post(server.url, {**good, "note": "x" * 2001})[0] == 400
        assert _post(server.url, {**good, "token": "guess"})[0] == 403
        assert _post(server.url, {**good, "packet_id": next(iter(session.reviewed))})[0] == 409
        assert last not in session.reviewed
        assert _post(server.url, good)[0] == 303
        with NO_PROXY.open(server.url, timeout=10) as reply:
            assert "All 4 pairs reviewed" in reply.read().decode()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            NO_PROXY.open(server.url + "reviews.jsonl", timeout=10)
    assert len((tmp_path / "reviews.jsonl").read_text().splitlines()) == 4


def test_cli_binds_localhost_by_default_and_exits_2_on_a_bad_packet(tmp_path, capsys):
    args = build_parser().parse_args(["review", "packet.parquet"])
    assert (args.host, args.port, args.out) == ("127.0.0.1", 8765, None) and args.reviewer
    assert main(["review", str(tmp_path / "missing.parquet"), "--port", "0"]) == 2
    assert "mangadistill review: error:" in capsys.readouterr().err


def _chromium():
    """A headless Chromium driven through Debian's chromedriver, or a skip saying what to install."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("chromium or chromedriver missing: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_a_person_reviews_a_packet_in_chromium_closes_and_resumes(tmp_path, packet):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    started = time.monotonic()
    uri, key, pairs = packet
    out, screenshot = tmp_path / "completed_reviews.jsonl", tmp_path / "review_page.png"
    browser = _chromium()
    shown = {}

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).get_attribute("textContent")

    def current() -> None:
        """Note what the page shows; on the pair with the <script> answer, check it is text and take the shot."""
        packet_id = browser.find_element(By.NAME, "packet_id").get_attribute("value")
        shown[packet_id] = (text("answer-a"), text("answer-b"))
        if SCRIPT_ANSWER in shown[packet_id]:
            side = "answer-a" if shown[packet_id][0] == SCRIPT_ANSWER else "answer-b"
            assert browser.find_element(By.ID, side).text.startswith('<script>document.title = "pwned"')
            assert browser.title != "pwned" and not browser.find_elements(By.CSS_SELECTOR, ".text script, .text b")
            browser.save_screenshot(str(screenshot))

    def wait_for_progress(expected: str) -> None:
        """Until the progress line says `expected`; the page is replaced after each choice, so an element found
        on the old page can go stale before its text is read: look again."""
        WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda b: expected in b.find_element(By.ID, "progress").text)

    try:
        with ReviewServer(ReviewSession(uri, str(out), "ana", rng=_swapping_rng([True, False, True]))) as server:
            browser.get(server.url)
            wait_for_progress("Pair 1 of 4")
            current()
            browser.find_element(By.ID, "choose-a").click()  # a button
            wait_for_progress("Pair 2 of 4")
            current()
            ActionChains(browser).send_keys("n").perform()  # shortcut into the note, Escape out, b for B
            ActionChains(browser).send_keys("B has the right date", Keys.ESCAPE, "b").perform()
            wait_for_progress("Pair 3 of 4")
            current()
            ActionChains(browser).send_keys("x").perform()  # both bad
            wait_for_progress("Pair 4 of 4")
        # the server is closed: a new one over the same file resumes at the pair not yet reviewed
        with ReviewServer(ReviewSession(uri, str(out), "ana")) as server:
            browser.get(server.url)
            wait_for_progress("Pair 4 of 4 · 3 reviewed")
            current()
            ActionChains(browser).send_keys("t").perform()
            WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "done"))
            assert "completed_reviews_uri=" in text("done")
    finally:
        browser.quit()

    assert len(shown) == 4 and screenshot.stat().st_size > 10_000  # the <script> pair was shown and shot
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["packet_id"] for row in rows] == list(pairs)  # packet order, each once
    for row, clicked in zip(rows, ("a", "b", "both_bad", "tie"), strict=True):
        first, second = shown[row["packet_id"]]
        if clicked in ("a", "b"):  # the packet answer whose text was on the clicked side
            text_clicked = first if clicked == "a" else second
            assert pairs[row["packet_id"]][f"answer_{row['choice']}"] == text_clicked
        else:
            assert row["choice"] == clicked
        assert row["shown_order"] == ("ab" if first == pairs[row["packet_id"]]["answer_a"] else "ba")
    assert [row["shown_order"] for row in rows[:3]] == ["ba", "ab", "ba"]
    assert rows[1]["note"] == "B has the right date" and rows[0]["note"] is None
    result = score_human_reviews(str(out), key)
    assert result.win_rate is not None and result.reviews == 4 and result.status.startswith("complete: win rate")
    print(f"screenshot: {screenshot}; browser test took {time.monotonic() - started:.1f}s")
