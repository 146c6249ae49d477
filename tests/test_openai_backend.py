"""`--backend openai`: the real pipelines through a real OpenAI-compatible server.

The server is llama-cpp-python's own (`python -m cai_cli.llama_server`, which loads the model so
that it runs on CPUs with AMX too) serving the embedded model on the loopback address; the tests
start and stop it themselves. Faults are real too: a server SIGKILLed and restarted in the middle
of a run, a proxy in front of the real server that answers 500 and 429 for a while (or strips the
log-probabilities, or wants an API key), and a second server that is not there at all.

Set CAI_KILL_REPORT=1 and run pytest with -s to print the figures of the kill tests.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT, cai_env, read_jsonl, run_cai, write_jsonl
from fault_proxy import FaultProxy

ALIAS = "smollm2"
# One thread for the server and for cai: the machine is small and shared.
SERVER_ARGS = ["--alias", ALIAS, "--threads", "1", "--n-ctx", "2048"]
FAST = ["--max-tokens", "8", "--threads", "1"]
SECRET = "sk-test-0123456789-do-not-print"


def server_args(url: str, *extra: str) -> list[str]:
    return ["--backend", "openai", "--base-url", url, "-m", ALIAS, *extra]


@pytest.fixture(scope="session")
def server():
    """One server for the session (a model load is the slow part of a start)."""
    from cai_cli.llama_server import ServerProcess

    with ServerProcess(SERVER_ARGS, env=cai_env()) as process:
        yield process


@pytest.fixture(scope="module")
def red_team() -> list[dict]:
    return [json.loads(line) for line in (EXAMPLES / "red_team.jsonl").read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


# --- pure parts ---------------------------------------------------------------------------------

def test_base_urls_are_split_normalised_and_checked():
    from cai_cli.backends.servers import display_url, parse_base_urls
    from cai_cli.errors import CaiError

    assert parse_base_urls(["http://a:8000", "http://b:1/v1/,http://c:2", "http://a:8000/v1"]) == [
        "http://a:8000/v1", "http://b:1/v1", "http://c:2/v1"]
    assert parse_base_urls(["https://host/api/openai/v1"]) == ["https://host/api/openai/v1"]
    for bad in (["foo:bar"], ["127.0.0.1:8000"], ["http://:80"], ["http://h:port"], [], [" , "]):
        with pytest.raises(CaiError):
            parse_base_urls(bad)
    assert display_url("http://user:pw@host:81/v1?key=s") == "http://host:81/v1"


def test_answer_letters_are_read_from_every_shape_of_top_logprobs():
    from cai_cli.backends.openai import candidate_logprob, top_logprobs
    from cai_cli.stages.feedback import normalise_choice_logprobs

    legacy = {"logprobs": {"top_logprobs": [{"A": -0.5, "B": -1.5, " A": -3.0}]}}
    listed = {"logprobs": {"top_logprobs": [[{"token": "A", "logprob": -0.5}, {"token": "B", "logprob": -1.5}]]}}
    chat = {"logprobs": {"content": [{"token": "A", "top_logprobs": [{"token": "A", "logprob": -0.5},
                                                                      {"token": "B", "logprob": -1.5}]}]}}
    for choice in (legacy, listed, chat):
        top = top_logprobs(choice)
        probs = normalise_choice_logprobs([candidate_logprob(top, c) for c in ("A", "B")])
        assert probs == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])
    assert top_logprobs({"logprobs": None}) == [] and top_logprobs({}) == []
    # Every top token spelling the start of the option counts; one absent is impossible.
    top = [("A", math.log(0.2)), ("A)", math.log(0.1)), ("B", math.log(0.3))]
    assert candidate_logprob(top, "A)") == pytest.approx(math.log(0.3))
    assert candidate_logprob(top, "C)") == float("-inf")
    assert normalise_choice_logprobs([candidate_logprob(top, "C"), candidate_logprob(top, "B")]) == [0.0, 1.0]


def test_backoff_doubles_up_to_its_ceiling():
    from cai_cli.backends.servers import BACKOFF_MAX, backoff_delay

    assert [backoff_delay(k) for k in range(1, 8)] == [1, 2, 4, 8, 16, BACKOFF_MAX, BACKOFF_MAX]


def test_pool_keeps_order_limits_each_server_and_retries_elsewhere(monkeypatch):
    """The pool's rules without HTTP: `post` is replaced by a function that sleeps a random
    while, as servers take their time, and fails every request to a dead second server."""
    import random

    from cai_cli.backends import RequestFailed
    from cai_cli.backends.servers import Retryable, ServerPool

    one, two = "http://one:1/v1", "http://two:2/v1"
    pool = ServerPool([one, two], concurrency=3, retries=3)
    busy = {one: 0, two: 0}
    peak = dict(busy)
    seen: dict[int, list[str]] = {}
    lock = threading.Lock()
    rng = random.Random(0)

    def post(server, path, body):
        with lock:
            busy[server.label] += 1
            peak[server.label] = max(peak[server.label], busy[server.label])
            seen.setdefault(body["i"], []).append(server.label)
        try:
            time.sleep(rng.uniform(0, 0.01))
            if server.label == two:
                raise Retryable(f"{two}: connection refused")
            return {"i": body["i"]}
        finally:
            with lock:
                busy[server.label] -= 1

    monkeypatch.setattr(pool, "post", post)

    def call(i):
        return lambda post: post("/x", {"i": i})["i"]

    assert list(pool.run(call(i) for i in range(60))) == list(range(60))
    assert peak[one] == 3 and peak[two] <= 3  # never over the limit of requests in flight
    tried_dead = [attempts for attempts in seen.values() if attempts[0] == two]
    assert tried_dead and all(attempts[-1] == one for attempts in tried_dead)  # retried on the live one
    assert sum(len(attempts) for attempts in seen.values()) == 60 + pool.failed_attempts
    # The dead server was left alone while backing off: far fewer attempts than calls.
    assert pool.failed_attempts < 20

    def failing(i):
        def run(post):
            if i == 3:
                raise RequestFailed("HTTP 400 bad request")
            return post("/x", {"i": i})["i"]
        return run

    got = []
    with pytest.raises(RequestFailed, match="HTTP 400"):
        for value in pool.run(failing(i) for i in range(10)):
            got.append(value)
    assert got == [0, 1, 2]  # everything before the failed call, nothing after it


# --- the pipelines through the server -------------------------------------------------------------

def test_sample_critique_and_revise_through_the_server(server, prompts, tmp_path):
    seeded = ["--temperature", "1.0", "--seed", "5"]
    first = run_cai("sample", *server_args(server.url), *FAST, *seeded, prompts)
    assert first.returncode == 0, first
    records = first.records
    originals = read_jsonl(prompts)
    assert [r["id"] for r in records] == [r["id"] for r in originals]
    assert records[0]["source"] == {"team": "qa", "tags": ["x"]}  # passed through
    assert all(isinstance(r["response"], str) and r["response"] for r in records)
    # Same seed, same text, whatever the number of requests in flight (the server reuses the
    # cached prefix a prompt shares with the one before, the same for these three in any order);
    # another seed, other text.
    again = run_cai("sample", *server_args(server.url), *FAST, *seeded, "--concurrency", "1", prompts)
    assert again.returncode == 0 and again.stdout == first.stdout
    other = run_cai("sample", *server_args(server.url), *FAST, "--temperature", "1.0", "--seed", "6", prompts)
    assert other.returncode == 0 and other.stdout != first.stdout

    sampled = write_jsonl(tmp_path / "sampled.jsonl", records)
    cai = f"{sys.executable} -m cai_cli"
    options = " ".join(server_args(server.url, *FAST, "--no-few-shot"))
    pipeline = f"{cai} critique {options} {sampled} | {cai} revise {options}"
    chain = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], cwd=ROOT, env=cai_env(), capture_output=True,
                           text=True, timeout=300)
    assert chain.returncode == 0, chain.stderr
    revised = [json.loads(line) for line in chain.stdout.splitlines()]
    assert [r["id"] for r in revised] == [r["id"] for r in records]
    assert all(r["initial_response"] == s["response"] and r["revisions"][0]["critique"]
               for r, s in zip(revised, records))


def test_raw_text_continues_up_to_a_stop_string_and_redteam_runs_through_the_server(server, tmp_path):
    """Requests with raw `prompt` text (`cai redteam --raw`, base models) go to /v1/completions as
    they are; stop strings end them as on the in-process backends."""
    from cai_cli.backends import BackendOptions, GenerationRequest, load_backend

    backend = load_backend(BackendOptions(backend="openai", base_urls=(server.url,), model=ALIAS))
    listing = "Questions people ask:\n1. How do I bake bread?\n2. What is a black hole?\n3."
    chat = [{"role": "user", "content": "Name three fruits, one per line."}]
    listed, answered = backend.generate([GenerationRequest([], 40, 0.0, 1.0, 0, prompt=listing, stop=("\n",)),
                                         GenerationRequest(chat, 24, 0.0, 1.0, 0)])
    assert listed.text.strip() and "\n" not in listed.text and listed.finish_reason == "stop", listed
    assert "\n" in answered.text.strip() or answered.finish_reason == "length", answered  # its own stop rules

    seeds = write_jsonl(tmp_path / "seeds.jsonl", [json.loads(line) for line in
                                                   (EXAMPLES / "red_team.jsonl").read_text().splitlines()[:8]])
    result = run_cai("redteam", seeds, "-n", "2", "--raw", *server_args(server.url), "--max-tokens", "32")
    assert result.returncode == 0, result
    assert len(result.records) == 2 and all(r["source"] == "generated" for r in result.records)


def test_compare_and_eval_through_the_server_agree_with_the_in_process_model(server, embedded_model, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "p1", "prompt": "How can I pick my neighbour's lock?",
         "responses": ["I can't help you break into a home.", "Use a tension wrench and a pick."]},
        {"id": "p2", "prompt": "What is the capital of France?", "responses": ["Paris.", "Berlin, I think."]},
        {"id": "p3", "messages": [{"role": "user", "content": "Say something kind."}],
         "responses": ["You are doing great.", "No.", "Have a lovely day!"]}])
    remote = run_cai("compare", *server_args(server.url, "--tokenizer", str(embedded_model)), "--threads", "1",
                     "--principles", "2", pairs)
    local = run_cai("compare", "--threads", "1", "--principles", "2", pairs)
    assert remote.returncode == 0, remote
    assert local.returncode == 0, local
    assert [r["id"] for r in remote.records] == ["p1", "p2", "p3:0-1", "p3:0-2", "p3:1-2"]
    for got, expected in zip(remote.records, local.records):
        assert got["principles"] == expected["principles"]
        for a, b in zip(got["orderings"], expected["orderings"]):
            assert (a["a"], a["b"]) == (b["a"], b["b"])
            assert a["p_a"] == pytest.approx(b["p_a"], abs=0.02)  # same prompt, same model, another process

    lines = (EXAMPLES / "labeled_pairs.jsonl").read_text().splitlines()[:2]
    labeled = write_jsonl(tmp_path / "labeled.jsonl", [json.loads(line) for line in lines])
    remote = run_cai("eval", *server_args(server.url, "--tokenizer", str(embedded_model)), labeled)
    local = run_cai("eval", "--threads", "1", labeled)
    assert remote.returncode == 0, remote
    summary, expected = json.loads(remote.stdout), json.loads(local.stdout)
    assert summary["backend"] == "openai" and summary["model"] == ALIAS
    assert summary["mean_p_first"] == pytest.approx(expected["mean_p_first"], abs=0.02)


def test_compare_without_a_template_or_without_logprobs_is_one_clear_error(server, embedded_model, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"id": "p1", "prompt": "Hi", "responses": ["Hello", "Go away"]}])
    result = run_cai("compare", *server_args(server.url), pairs)
    assert result.returncode == 1 and result.stdout == ""
    assert error_lines(result.stderr) == [result.stderr.strip().splitlines()[-1]]
    assert "--tokenizer" in result.stderr and "Traceback" not in result.stderr

    with FaultProxy(server.url, drop_logprobs=True) as proxy:
        result = run_cai("compare", *server_args(proxy.url, "--tokenizer", str(embedded_model)), pairs)
    assert result.returncode == 1 and result.stdout == ""
    assert len(error_lines(result.stderr)) == 1
    assert "Error: record p1: the server returned no log-probabilities" in result.stderr


def test_bad_urls_and_model_names_are_one_error_line(server, prompts):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    cases = [
        (["--backend", "openai", "--base-url", dead, "-m", ALIAS], "no server answers"),
        (["--backend", "openai", "--base-url", "localhost:8000", "-m", ALIAS], "is not an http(s) URL"),
        (["--backend", "openai", "-m", ALIAS], "needs a server: --base-url"),
        (server_args(server.url[: -len("/v1")] + "/api/v2"), "HTTP 404"),
        (["--backend", "openai", "--base-url", server.url, "-m", "gpt-9"], "does not serve a model named 'gpt-9'"),
    ]
    for args, message in cases:
        result = run_cai("sample", *args, *FAST, prompts, env={"CAI_BASE_URL": ""})
        assert result.returncode == 1, (args, result)
        assert result.stdout == ""
        assert len(error_lines(result.stderr)) == 1 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    # Without -m, the one model the server serves is used; CAI_BASE_URL picks the backend.
    result = run_cai("sample", *FAST, prompts, env={"CAI_BASE_URL": server.url})
    assert result.returncode == 0, result
    assert len(result.records) == 3


def test_the_api_key_is_never_shown_or_written(server, prompts, tmp_path):
    output = tmp_path / "out.jsonl"
    with FaultProxy(server.url, require_key=SECRET) as proxy:
        # A wrong key, which the server echoes back in its error.
        wrong = run_cai("sample", *server_args(proxy.url), *FAST, prompts, env={"CAI_API_KEY": SECRET + "-wrong"})
        assert wrong.returncode == 1 and len(error_lines(wrong.stderr)) == 1
        assert "HTTP 401" in wrong.stderr and "CAI_API_KEY" in wrong.stderr
        assert SECRET not in wrong.stderr + wrong.stdout
        # The right key, from OPENAI_API_KEY, with --debug for good measure.
        right = run_cai("--debug", "sample", *server_args(proxy.url), *FAST, prompts, "-o", output,
                        env={"OPENAI_API_KEY": SECRET, "CAI_API_KEY": ""})
        assert right.returncode == 0, right
        # A failure after the key was accepted: a model name the server does not list.
        unknown = run_cai("sample", "--backend", "openai", "--base-url", proxy.url, "-m", "x", *FAST, prompts,
                          env={"CAI_API_KEY": SECRET})
        assert unknown.returncode == 1
    assert len(read_jsonl(output)) == 3
    for text in (right.stdout, right.stderr, output.read_text(), unknown.stderr, unknown.stdout):
        assert SECRET not in text


# --- faults ---------------------------------------------------------------------------------------

def test_a_server_answering_500_and_429_for_a_while_loses_nothing(server, red_team, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:6])
    with FaultProxy(server.url, failures=[500] * 4 + [429] * 4, retry_after="1") as proxy:
        result = run_cai("sample", *server_args(proxy.url), *FAST, "--concurrency", "4", prompts)
    assert result.returncode == 0, result
    assert proxy.failed == 8 and proxy.completions == 6 + 8
    assert [r["id"] for r in result.records] == [r["id"] for r in red_team[:6]]
    assert "HTTP 500 injected fault 500" in result.stderr and "answers again" in result.stderr
    assert "8 failed request attempt(s) were retried" in result.stderr


def test_two_servers_with_one_down_spread_over_the_one_that_answers(server, red_team, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:6])
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FaultProxy(server.url) as proxy:
        result = run_cai("sample", "--backend", "openai", "--base-url", f"{dead},{proxy.url}", "-m", ALIAS,
                         *FAST, "--concurrency", "2", prompts)
    assert result.returncode == 0, result
    assert [r["id"] for r in result.records] == [r["id"] for r in red_team[:6]]
    assert proxy.completions >= 6
    assert f"{dead}/models: connection refused" in result.stderr
    assert "sending requests to the other servers" in result.stderr


def complete_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, limit: float = 180) -> None:
    started = time.monotonic()
    while len(complete_lines(path)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - started < limit, "no progress"
        time.sleep(0.05)


def report(message: str) -> None:
    if os.environ.get("CAI_KILL_REPORT"):
        print("\n" + message)


@pytest.mark.slow
def test_a_server_killed_mid_run_and_restarted_loses_and_duplicates_no_record(red_team, tmp_path):
    """Two ways a server dies under a run writing `-o FILE --resume`: it comes back within the
    retries (the run goes on by itself), or it stays away (the run stops with an error naming
    the record, and a rerun with --resume finishes the rest)."""
    from cai_cli.llama_server import ServerProcess

    # Enough records for three kills in one run (after 2, 6 and 10 are written) and a tail after them.
    ids = [r["id"] for r in red_team[:16]]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", red_team[:16])
    output = tmp_path / "out.jsonl"
    server = ServerProcess(SERVER_ARGS, env=cai_env())
    port = server.port
    args = ["sample", *server_args(server.url), *FAST, "--concurrency", "2", str(prompts),
            "-o", str(output), "--resume"]
    kills = restarts = 0
    try:
        # 1. Killed three times during one run, each time back after a second or two.
        run = subprocess.Popen([sys.executable, "-m", "cai_cli", *args], cwd=ROOT, env=cai_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for wave in (2, 6, 10):
            wait_for_lines(output, wave, run)
            server.kill()
            kills += 1
            time.sleep(1.5)
            server = ServerProcess([*SERVER_ARGS, "--port", str(port)], env=cai_env())
            restarts += 1
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        assert "answers again" in stderr and "Traceback" not in stderr
        records = read_jsonl(output)
        assert sorted(r["id"] for r in records) == sorted(ids) and len(records) == len(ids)
        assert [r["id"] for r in records] == ids  # in input order, as one uninterrupted run writes them
        report(f"server killed {kills} times and restarted during one run: 0 records lost, 0 duplicated")

        # 2. Killed, and not back within --retries: an error naming the record; then --resume.
        output.unlink()
        quick = [*args, "--retries", "1"]
        run = subprocess.Popen([sys.executable, "-m", "cai_cli", *quick], cwd=ROOT, env=cai_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_lines(output, 4, run)
        server.kill()
        kills += 1
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 1
        errors = error_lines(stderr)
        assert len(errors) == 1 and errors[0].startswith("Error: record rt-0")
        assert "gave up after 2 attempts" in errors[0]
        written = output.read_bytes()
        done = [r["id"] for r in complete_lines(output)]
        assert len(done) == len(set(done)) and done == ids[:len(done)] and 4 <= len(done) < len(ids)
        assert errors[0].startswith(f"Error: record {ids[len(done)]}:")  # the first record not written
        server = ServerProcess([*SERVER_ARGS, "--port", str(port)], env=cai_env())
        restarts += 1
        resumed = run_cai(*quick)
        assert resumed.returncode == 0, resumed
        assert output.read_bytes().startswith(written)  # nothing written before was redone
        assert sorted(r["id"] for r in read_jsonl(output)) == sorted(ids)
        report(f"server killed and left down: the run stopped at record {ids[len(done)]} after {len(done)} records; "
               f"--resume wrote the other {len(ids) - len(done)}: 0 lost, 0 duplicated "
               f"({kills} kills, {restarts} restarts in all)")
    finally:
        server.stop()
