"""The seeds' request examples, sent as written, against slmserve (see ../shared/seeds)."""

import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

HELPFUL = {"system_prompt": "You are helpful.", "user_prompt": "Explain AI."}


def post(server, path: str, body: dict, timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=timeout)


def test_root_is_a_json_health_check(server):
    r = httpx.get(f"{server.url}/")
    assert r.status_code == 200 and r.json()["status"] == "healthy"


def test_infer_returns_the_answer_without_the_prompt(server):
    r = post(server, "/infer", HELPFUL)
    text = r.json()["response"]
    assert r.status_code == 200 and set(r.json()) == {"response"}
    assert text.strip() and "You are helpful." not in text and "Explain AI." not in text


def test_chat_returns_its_chat_id_and_the_same_answer_as_infer(server):
    r = post(server, "/chat", {"chat_id": "1", **HELPFUL}).json()
    assert r["chat_id"] == "1"
    assert r["response"] == post(server, "/infer", HELPFUL).json()["response"]  # greedy by default
    assert r["usage"]["completion_tokens"] <= 128


def test_batched_answers_in_order_and_a_bad_query_fails_alone(server):
    queries = [
        {"chat_id": "1", "system_prompt": "You are helpful.", "user_prompt": "Explain AI."},
        {"chat_id": "2", "system_prompt": "You are helpful.", "user_prompt": "What is overfitting?"},
        {"chat_id": "3", "user_prompt": "I hate mondays"},
        {"chat_id": "4", "system_prompt": "no user prompt"},
    ]
    r = post(server, "/chat/batched", {"queries": queries})
    assert r.status_code == 200
    body = r.json()
    assert body["responses"][0] == post(server, "/infer", HELPFUL).json()["response"]
    assert body["responses"][1] and body["responses"][2:] == ["", ""]
    assert [x["chat_id"] for x in body["results"]] == ["1", "2", "3", "4"]
    assert [x["status"] for x in body["results"]] == [200, 200, 400, 422]
    assert body["results"][2]["error"] == "Prompt contains inappropriate content"
    assert "user_prompt" in body["results"][3]["error"]


def running_now(server) -> int:
    text = httpx.get(f"{server.url}/metrics").text
    return round(float(re.search(r"^slmserve_requests_running (\S+)$", text, re.M).group(1)))


def test_a_batch_of_8_is_decoded_together_and_costs_less_than_8_single_calls(server):
    q = {"system_prompt": "You are helpful.", "max_tokens": 32, "temperature": 0}
    queries = [{"chat_id": str(i), "user_prompt": f"Tell a long story about fruit number {i}.", **q} for i in range(8)]
    with ThreadPoolExecutor(1) as pool:
        start = time.perf_counter()
        batched = pool.submit(post, server, "/chat/batched", {"queries": queries})
        most = 0
        while not batched.done():  # the engine's running count, scraped while the batch decodes
            most = max(most, running_now(server))
            time.sleep(0.1)
        r = batched.result()
        batch = time.perf_counter() - start
    assert all(x["status"] == 200 for x in r.json()["results"])
    # The same 8 queries in a row, after the batch (their prompts are then cached, which favours the row): the
    # answers ask for a long story (all 32 tokens), and the yardstick is these very calls, whatever their lengths.
    start = time.perf_counter()
    for query in queries:
        post(server, "/chat", query)
    in_a_row = time.perf_counter() - start
    print(f"batch of 8: {batch:.2f} s; the same 8 in a row: {in_a_row:.2f} s; ratio {batch / in_a_row:.2f}")
    assert most == 8, f"at most {most} of the 8 queries were decoded at once"
    # Measured 0.62-0.81 of the same 8 in a row here (2026-11-25). Issue #3 hoped for < 3x one call; decoding
    # is compute-bound on 2 cores (a step of 8 sequences costs ~3x a step of one), so that is out of reach. The bound
    # here is only "cheaper than in a row".
    assert batch < in_a_row, f"batch of 8 took {batch:.2f} s, the same 8 in a row {in_a_row:.2f} s"


def test_chat_completions_without_model_and_100_threads_overlap(server):
    body = {"messages": [{"role": "user", "content": "Hello, how are you?"}], "max_tokens": 8}
    r = post(server, "/chat/completions", body)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"

    def call(_):
        t0 = time.perf_counter()
        ok = post(server, "/chat/completions", body).status_code == 200
        return ok, t0, time.perf_counter()

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(call, range(100)))
    assert all(ok for ok, _, _ in results)
    # Served together, not in a row: the slowest call is far shorter than the sum of all.
    spans = [end - t0 for _, t0, end in results]
    print(f"100 threads: slowest call {max(spans):.2f} s, sum of calls {sum(spans):.2f} s")
    assert max(spans) < sum(spans) / 5


def test_content_filter_on_openai_routes_uses_the_openai_shape(server):
    body = {"messages": [{"role": "user", "content": "Violence is the answer"}], "max_tokens": 4}
    for path in ("/v1/chat/completions", "/chat/completions"):
        r = post(server, path, body)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "Prompt contains inappropriate content"
    r = post(server, "/v1/completions", {"prompt": "pure HATE", "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"


def test_generate_as_in_seed_003(server):
    r = post(server, "/generate", {"prompt": "The future of AI is", "max_length": 50})
    body = r.json()
    assert r.status_code == 200 and body["model_name"] == "smollm2-135m-instruct"
    assert body["generated_text"].startswith("The future of AI is") and len(body["generated_text"]) > 25
    assert body["metadata"]["prompt_tokens"] + body["metadata"]["completion_tokens"] <= 50


@pytest.mark.parametrize(
    "body, status",
    [
        ({"prompt": "", "max_length": 50}, 422),
        ({"max_length": 50}, 422),
        ({"prompt": "x" * 501}, 422),
        ({"prompt": "ok", "max_length": 5}, 422),
        ({"prompt": "ok", "max_length": 201}, 422),
        ({"prompt": "ok", "max_length": "long"}, 422),
        ({"prompt": "I hate this", "max_length": 50}, 400),
        ({"prompt": "ok", "model": "gpt2"}, 404),
    ],
)
def test_generate_rejects(server, body, status):
    r = post(server, "/generate", body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if status == 400:
        assert detail == "Prompt contains inappropriate content"
    if status == 422 and "max_length" in body and body["max_length"] == 201:
        assert "200" in str(detail)


def test_generate_as_in_seed_004_and_info(server):
    body = {"prompt": "Machine learning is", "max_length": 50, "temperature": 0.7, "top_k": 50, "top_p": 1.0}
    r = post(server, "/generate", body).json()
    assert r["success"] is True and r["prompt"] == body["prompt"]
    assert r["parameters"] == {
        **{k: body[k] for k in ("max_length", "temperature", "top_k", "top_p")},
        "do_sample": True,
    }
    assert r["metadata"]["model"] == "smollm2-135m-instruct" and r["inference_time_seconds"] > 0
    info = httpx.get(f"{server.url}/info").json()
    assert (info["max_length_limit"], info["default_max_length"], info["default_temperature"]) == (200, 50, 0.7)
    assert {"prompt", "max_length", "temperature", "top_k", "top_p"} <= set(info["supported_parameters"])
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "healthy" and health["cuda_available"] is False


def sse_events(server, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_slm_load_of_a_folder_with_no_adapter_weights_is_a_400_naming_the_missing_file(server, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    r = post(server, "/slm/load", {"lora_path": str(tmp_path)})
    assert r.status_code == 400 and "no adapter_model.safetensors" in r.json()["detail"]


def test_slm_lifecycle_load_generate_unload_and_stream_loads_again(own_server):
    s = own_server
    info = httpx.get(f"{s.url}/slm/info").json()
    assert info["model_loaded"] is True and info["device"] == "cpu" and info["cuda_available"] is False
    r = post(s, "/slm/load", {}).json()
    assert r["success"] is True and r["message"] == "Model already loaded on cpu" and r["model_path"].endswith(".gguf")
    g = post(s, "/slm/generate", {"prompt": "What is Python?", "max_new_tokens": 20, "do_sample": False}).json()
    assert g["success"] and g["response"] and g["full_response"].endswith(g["response"])
    assert g["settings"] == {"max_new_tokens": 20, "temperature": 0.7, "do_sample": False}
    # `{}` is no body, as for /slm/load: the whole model goes (once a 422 asking for lora_name).
    assert httpx.post(f"{s.url}/slm/unload", json={}).json() == {
        "success": True,
        "message": "Model unloaded successfully",
    }
    assert httpx.get(f"{s.url}/slm/info").json()["model_loaded"] is False
    assert httpx.post(f"{s.url}/slm/unload").json() == {"success": False, "message": "No model is loaded"}
    assert httpx.get(f"{s.url}/health").json()["status"] == "unloaded"
    assert post(s, "/infer", HELPFUL).status_code == 503
    r = post(s, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unloaded"  # not "still loading"
    assert "/slm/load" in r.json()["error"]["message"]
    events = sse_events(s, "/slm/stream", {"prompt": "Write a short story about a robot", "max_new_tokens": 12})
    statuses = [e.get("status") for e in events if "status" in e]
    assert statuses[:3] == ["Loading SLM model...", "Model loaded on cpu", "Generating response..."]
    pieces = [e for e in events if "text" in e]
    assert pieces and all(e["is_complete"] is False for e in pieces)
    assert pieces[-1]["full_text"] == "".join(e["text"] for e in pieces)
    assert events[-1]["status"] == "Response complete!" and events[-1]["is_complete"] is True
    assert events[-1]["device_used"] == "cpu" and events[-1]["full_text"] == pieces[-1]["full_text"]
    assert httpx.get(f"{s.url}/health").status_code == 200


def unload_while_running(s, pool: ThreadPoolExecutor, max_tokens: int) -> tuple[Future, Future]:
    """A chat of max_tokens tokens, then /slm/unload once it runs: (the chat, the unload)."""
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": max_tokens, "ignore_eos": True}
    running = pool.submit(post, s, "/v1/chat/completions", body)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and s.metric("slmserve_requests_running") < 1:
        time.sleep(0.02)
    return running, pool.submit(httpx.post, f"{s.url}/slm/unload", timeout=120)


def test_unload_lets_requests_in_flight_finish(own_server):
    s = own_server
    with ThreadPoolExecutor(2) as pool:
        running, unload = unload_while_running(s, pool, 200)
        r = running.result()
        assert unload.result().json()["success"] is True
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 200
    assert post(s, "/slm/generate", {"prompt": "Hi", "max_new_tokens": 4}).json()["success"] is True  # loads again


def test_a_generate_sent_during_an_unload_is_refused_and_does_not_load_the_model_again(own_server):
    s = own_server
    post(s, "/slm/load", {})
    with ThreadPoolExecutor(2) as pool:
        running, unload = unload_while_running(s, pool, 150)
        time.sleep(0.3)  # the unload now waits for the running request
        raced = post(s, "/slm/generate", {"prompt": "Hi", "max_new_tokens": 4})
        streamed = sse_events(s, "/slm/stream", {"prompt": "Hi", "max_new_tokens": 4})
        assert unload.result().json()["success"] is True
        assert running.result().status_code == 200
    assert raced.status_code == 503 and "being unloaded" in raced.json()["detail"]
    assert streamed[-1]["status"] == "error" and "being unloaded" in streamed[-1]["error"]
    assert httpx.get(f"{s.url}/health").json()["status"] == "unloaded"  # the unload was not undone
    assert post(s, "/slm/generate", {"prompt": "Hi", "max_new_tokens": 4}).json()["success"] is True  # loads now


def test_slm_stream_and_generate_refuse_blocked_words(own_server):
    r = post(own_server, "/slm/stream", {"prompt": "I hate robots"})
    assert r.status_code == 400 and r.json() == {"detail": "Prompt contains inappropriate content"}
    assert post(own_server, "/slm/generate", {"prompt": "I hate robots"}).status_code == 400
    assert post(own_server, "/slm/generate", {"prompt": ""}).status_code == 422


def test_the_gateway_routes_take_model_and_an_unknown_one_is_a_404_not_the_base_model(server):
    refused = post(server, "/infer", {**HELPFUL, "model": "pirate"})
    assert refused.status_code == 404
    assert refused.json()["detail"] == "The model 'pirate' does not exist; available: smollm2-135m-instruct"
    named = post(server, "/infer", {**HELPFUL, "model": "smollm2-135m-instruct", "max_tokens": 4})
    assert named.status_code == 200 and named.json()["response"]
    batched = post(
        server,
        "/chat/batched",
        {"queries": [{**HELPFUL, "chat_id": 1, "max_tokens": 4}, {**HELPFUL, "chat_id": 2, "model": "pirate"}]},
    ).json()["results"]
    assert batched[0]["status"] == 200 and batched[1]["status"] == 404 and "pirate" in batched[1]["error"]
