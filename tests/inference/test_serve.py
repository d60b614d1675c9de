"""serve.py: LitServe over predict's Predictor. Request checks, a failure kept to its own request, and
one real server (loopback, bounded waits): parity with predict.py, bad requests, the page in Chromium,
a clean stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bigbird_ft.inference.serve import MAX_EVIDENCE, BadRequest, check_request, read_body
from tests.conftest import PYTHON, ROOT, in_ci, run_script

MB = 2**20


# ------------------------------------------------------------------------------------ request checks
@pytest.mark.parametrize(("body", "status", "message"), [
    (b'{"text": "a', 400, "the body is not valid JSON (Unterminated string"),
    (b'{"text": "caf\xe9"}', 400, "the body is not UTF-8 (byte 13)"),
    (b"x" * (MB + 1), 413, "over the server's max_body_mb (1 MB)"),
    (b'["a", "b"]', 422, 'the body must be a JSON object with "text"'),
    (b'{"document": "a"}', 422, 'unknown key "document"'),
    (b"{}", 422, 'give either "text" (a string) or "texts"'),
    (b'{"text": "a", "texts": ["b"]}', 422, 'give either "text" (a string) or "texts"'),
    (b'{"text": 7}', 422, '"text" is int, not a string'),
    (b'{"text": null}', 422, '"text" is null, not a string'),
    (b'{"texts": ["a", ["b"]]}', 422, '"texts"[1] is list, not a string'),
    (b'{"texts": []}', 422, '"texts" must be a non-empty list of strings'),
    (b'{"text": "  \\n "}', 422, '"text" is empty'),
    (b'{"texts": ["a", ""]}', 422, '"texts"[1] is empty'),
    (b'{"text": "a", "evidence": -1}', 422, '"evidence" is -1: a whole number of spans from 0 to 32'),
    (b'{"text": "a", "evidence": 33}', 422, '"evidence" is 33'),
    (b'{"text": "a", "evidence": "3"}', 422, '"evidence" is "3"'),
    (b'{"text": "a", "evidence": true}', 422, '"evidence" is true'),
    (b'{"texts": ["a", "b"], "ids": [1]}', 422, '"ids" must be a list of 2 ids'),
])
def test_a_bad_body_is_refused_in_one_line(body, status, message):
    with pytest.raises(BadRequest) as refused:
        check_request(read_body(body, MB))
    assert refused.value.status == status
    assert message in refused.value.message and "\n" not in refused.value.message


def test_a_good_body_keeps_texts_ids_and_evidence():
    request = check_request(read_body('{"texts": ["é", "b"], "ids": ["x", 2], "evidence": 3}'.encode(), MB))
    assert (request.texts, request.ids, request.evidence, request.single) == (["é", "b"], ["x", 2], 3, False)
    request = check_request(read_body(b'{"text": "a"}', MB), default_evidence=2)
    assert (request.texts, request.ids, request.evidence, request.single) == (["a"], None, 2, True)
    assert MAX_EVIDENCE == 32


# ----------------------------------------------------------------------------- a trained tiny model
@pytest.fixture(scope="module")
def documents():
    """Mixed lengths: 12 to ~900 words (over the model's 512 tokens: truncated, as predict.py does)."""
    from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec

    rows = SyntheticCorpus(SyntheticSpec(seed=11, min_words=12, max_words=900)).split("test", 10)
    return [row["text"] for row in rows]


def test_a_failing_document_does_not_take_its_batch_down(trained_run):
    from bigbird_ft.inference.serve import ClassifierAPI, PredictRequest, ServeSettings
    from bigbird_ft.models.checkpoints import find_checkpoint

    api = ClassifierAPI(ServeSettings(str(find_checkpoint(str(trained_run), None))), max_batch_size=4)
    api.setup("cpu")
    predict = api.predictor.predict

    def fail_on_boom(frame, source):  # an internal error for one document only
        if any("boom" in text for text in frame["text"]):
            raise RuntimeError("boom")
        return predict(frame, source)

    api.predictor.predict = fail_on_boom
    requests = [PredictRequest(["north wind over the hills"]), PredictRequest(["boom boom"]),
                PredictRequest(["the east", "south of the river"], ids=[1, 2], single=False)]
    answers = api.predict(requests)
    assert answers[1] == {"error": "internal error (RuntimeError: boom)", "status": 500}
    assert answers[0]["label"] in answers[0]["probs"] and abs(sum(answers[0]["probs"].values()) - 1) < 1e-5
    assert [p["id"] for p in answers[2]["predictions"]] == [1, 2]
    alone = api.predict([requests[0]])[0]
    assert alone == answers[0]


@pytest.mark.parametrize(("on_cpu", "workers", "environ", "threads"), [
    (True, 1, {}, None),                          # one worker keeps torch's default pool
    (True, 2, {}, 4),                             # 8 cores shared by 2 workers
    (True, 3, {}, 2),
    (True, 16, {}, 1),                            # never fewer than one thread
    (False, 2, {}, None),                         # a GPU worker's CPU pool is left alone
    (True, 2, {"OMP_NUM_THREADS": "8"}, None),    # the user's setting wins
])
def test_cpu_workers_share_the_cores(on_cpu, workers, environ, threads):
    from bigbird_ft.inference.serve import worker_threads

    assert worker_threads(on_cpu, workers, cores=8, environ=environ) == threads


def test_a_worker_takes_its_share_of_threads(trained_run):
    import torch

    from bigbird_ft.inference.serve import ClassifierAPI, ServeSettings
    from bigbird_ft.models.checkpoints import find_checkpoint

    before = torch.get_num_threads()
    api = ClassifierAPI(ServeSettings(str(find_checkpoint(str(trained_run), None)), threads=1))
    try:
        torch.set_num_threads(2)
        api.setup("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- a real server
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: bytes, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/predict", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def sigint_as_in_a_terminal() -> None:
    # a suite started in the background (`cmd &`, nohup) ignores SIGINT, and an ignored signal stays ignored
    # across exec: serve.py would then never see the test's Ctrl-C (its uvicorn workers, which set their own
    # handlers, stop; the main process waits on forever)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """serve.py in its own process group on a free loopback port; stopped at the end as Ctrl-C in a terminal
    stops it (SIGINT to the whole foreground group), which must end it and its workers within 90 s.

    Its log is at uvicorn's/LitServe's info level, so a stop that hangs shows how far the shutdown got."""
    port, tmp = free_port(), tmp_path_factory.mktemp("serve")
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([PYTHON, str(ROOT / "serve.py"), f"run_dir={trained_run}", f"port={port}",
                             "max_batch_size=8", "batch_timeout=0.05", "max_body_mb=1", "log_level=info",
                             f"hydra.run.dir={tmp / 'run'}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, preexec_fn=sigint_as_in_a_terminal)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
        try:
            if get(url + "/health", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the server was not ready within 240 s:\n" + (tmp / "serve.log").read_text()[-3000:])
    yield url
    os.killpg(proc.pid, signal.SIGINT)
    try:
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("serve.py did not stop within 90 s of Ctrl-C:\n" + (tmp / "serve.log").read_text()[-3000:])
        leftover, deadline = True, time.monotonic() + 20
        while leftover and time.monotonic() < deadline:  # the workers (and their exiting zombies) gone
            try:
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
            except ProcessLookupError:
                leftover = False
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        log.close()
    assert code == 0, (tmp / "serve.log").read_text()[-3000:]
    assert not leftover, "worker processes outlived the server"


@pytest.mark.slow
def test_served_answers_equal_predict_py_alone_and_batched(server, trained_run, documents, tmp_path):
    source, out = tmp_path / "docs.jsonl", tmp_path / "preds.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(documents)))
    result = run_script("predict.py", [f"run_dir={trained_run}", f"input={source}", f"output={out}", "evidence=2",
                                       f"hydra.run.dir={tmp_path / 'pred'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [json.loads(line) for line in out.read_text().splitlines()]

    def same(answer: dict, row: dict) -> None:
        assert answer["label"] == row["label"]
        for name, p in answer["probs"].items():
            assert abs(p - row[f"prob_{name}"]) < 1e-5
        assert [(s["start"], s["end"], s["text"]) for s in answer["evidence"]] == \
               [(s["start"], s["end"], s["text"]) for s in row["evidence"]]

    # 8 clients at once, one document each: the server batches them across clients
    with ThreadPoolExecutor(8) as pool:
        alone = list(pool.map(lambda t: post(server, json.dumps({"text": t, "evidence": 2}).encode()), documents))
    for (status, answer), row, text in zip(alone, expected, documents, strict=True):
        assert status == 200, answer
        same(answer, row)
        assert all(text[s["start"] : s["end"]] == s["text"] for s in answer["evidence"])
    # every document in one request, longest first
    order = sorted(range(len(documents)), key=lambda i: -len(documents[i]))
    status, batched = post(server, json.dumps({"texts": [documents[i] for i in order], "ids": order,
                                               "evidence": 2}).encode())
    assert status == 200, batched
    for answer in batched["predictions"]:
        same(answer, expected[answer["id"]])


BAD_REQUESTS = [
    (b"{not json", 400, "the body is not valid JSON"),
    (b'{"text": "caf\xe9 au lait"}', 400, "the body is not UTF-8"),
    (b'{"texts": ["fine", 3]}', 422, '"texts"[1] is int, not a string'),
    (b'{"id": 4}', 422, 'give either "text"'),
    (b'{"text": ""}', 422, '"text" is empty'),
    (b'{"text": "fine", "evidence": 1000}', 422, '"evidence" is 1000'),
    (b'{"text": "' + b"a " * (MB // 2 + 10) + b'"}', 413, "max_body_mb"),
]


@pytest.mark.slow
def test_a_bad_request_gets_a_4xx_and_the_server_keeps_serving(server):
    for body, status, message in BAD_REQUESTS:
        code, answer = post(server, body)
        assert code == status and list(answer) == ["error"] and message in answer["error"], (body[:40], code, answer)
        code, answer = post(server, b'{"text": "north wind over the hills"}')
        assert code == 200 and answer["label"] in answer["probs"], (body[:40], code, answer)
    assert get(server + "/health")[0] == 200


@pytest.mark.slow
def test_the_page_has_a_text_area_and_the_health_route_answers(server):
    status, page = get(server + "/")
    assert status == 200 and "<textarea id='text'" in page and "fetch('/predict'" in page
    assert get(server + "/health") == (200, "ok")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """Headless Chromium driven over the DevTools protocol (websocket-client; no driver binary)."""

    def __init__(self, binary: str, profile: Path) -> None:
        import websocket

        self.proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "--remote-allow-origins=*", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "HOME": str(profile)})
        active, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(active.read_text().split()[0])
        targets = json.loads(get(f"http://127.0.0.1:{port}/json/list")[1])
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"the page never satisfied {expression}")

    def close(self) -> None:
        if getattr(self, "ws", None):
            self.ws.close()
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.mark.slow
def test_the_page_in_chromium_shows_the_label_bars_and_marked_evidence(server, tmp_path):
    pytest.importorskip("websocket")
    binary = chromium()
    if binary is None:
        if in_ci():
            pytest.fail("chromium is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium here (.ci/run installs it)")
    text = "The north wind blows over the hills, and the river runs east to the sea near the old town."
    status, expected = post(server, json.dumps({"text": text, "evidence": 2}).encode())
    assert status == 200, expected
    browser = Browser(binary, tmp_path / "profile")
    try:
        browser.send("Page.navigate", url=server + "/")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('text')")
        browser.evaluate("document.getElementById('text').focus()")
        browser.send("Input.insertText", text=text)  # typed, as keystrokes insert it
        browser.evaluate("document.getElementById('evidence').value = '2'")
        box = browser.evaluate("(() => { const r = document.getElementById('submit').getBoundingClientRect();"
                               " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            browser.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        shown = json.loads(browser.wait_for(
            "document.getElementById('label').textContent && JSON.stringify({"
            "label: document.getElementById('label').textContent,"
            "text: document.getElementById('document').textContent,"
            "marks: [...document.querySelectorAll('#document mark.evidence')].map(m => [m.textContent, m.dataset.rank]),"
            "bars: [...document.querySelectorAll('#probs .prob')].map(r => [r.dataset.label,"
            " parseFloat(r.querySelector('.bar').style.width)])})"))
    finally:
        browser.close()
    assert shown["label"].startswith(expected["label"] + " (")
    assert shown["text"] == text
    ranked = sorted(enumerate(expected["evidence"], 1), key=lambda item: item[1]["start"])
    assert shown["marks"] == [[span["text"], str(rank)] for rank, span in ranked]
    assert [name for name, _ in shown["bars"]] == list(expected["probs"])
    for name, width in shown["bars"]:
        assert abs(width - 100 * expected["probs"][name]) < 0.06


def test_serve_help_lists_its_keys():
    result = subprocess.run([PYTHON, str(ROOT / "serve.py"), "--help"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0
    for key in ("run_dir=", "max_batch_size=8", "batch_timeout=", "max_body_mb=10", "evidence=0", "workers=1"):
        assert key in result.stdout


@pytest.mark.parametrize(("override", "message"), [
    ("host=localhost", "host=localhost is not one LitServe binds"),
    ("max_batch_size=0", "max_batch_size=0 is not a whole number of 1 or more: fix max_batch_size"),
    ("evidence=40", "evidence=40 is not a whole number from 0 to 32: fix evidence"),
    ("batch_timeout=-1", "batch_timeout=-1 is not a positive number of seconds: fix batch_timeout"),
    ("accelerator=tpu", "accelerator=tpu is not one of auto, cpu, gpu, mps: fix accelerator"),
])
def test_a_bad_server_key_is_refused_in_one_line(override, message):
    from hydra import compose, initialize_config_dir

    from bigbird_ft.errors import UserError
    from bigbird_ft.inference.serve import check_options

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("serve", overrides=["paths.output_dir=.", override])
    with pytest.raises(UserError) as refused:
        check_options(cfg)
    assert str(refused.value).startswith(message)


def test_serve_py_exits_with_one_line_on_a_bad_key(tmp_path):
    result = run_script("serve.py", ["run_dir=/nonexistent", "port=80", f"hydra.run.dir={tmp_path}"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: port=80 is not a whole number from 1024 to 65535: fix port"
