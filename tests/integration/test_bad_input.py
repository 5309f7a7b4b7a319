"""Bad input gets a 4xx in OpenAI's error shape, never a 500."""

import httpx
import pytest

GOOD = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({**GOOD, "max_tokens": -1}, 400, "max_tokens"),
        ({**GOOD, "max_tokens": 10**12}, 400, "max_tokens"),
        ({**GOOD, "max_tokens": "many"}, 400, "max_tokens"),
        ({**GOOD, "temperature": "hot"}, 400, "temperature"),
        ({**GOOD, "top_p": 0}, 400, "top_p"),
        ({**GOOD, "n": 0}, 400, "n"),
        ({**GOOD, "messages": []}, 400, "messages"),
        ({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
        ({"max_tokens": 4}, 400, "messages"),
        ({**GOOD, "logit_bias": {"abc": 1}}, 400, "logit_bias"),
        ({**GOOD, "logit_bias": {"99999999": 1}}, 400, "logit_bias"),
        ({**GOOD, "stop": [""]}, 400, None),
        ({**GOOD, "model": "nope"}, 404, "model"),
    ],
)
def test_chat_rejects(server, body, status, param):
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param


def test_malformed_json(server):
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "The request body is not valid JSON: Expecting value."


@pytest.mark.parametrize("prompt", ["", [], [[]], [-1], [10**9]])
def test_completion_prompt_rejects(server, prompt):
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_unknown_route_and_method_are_openai_shaped(server):
    assert httpx.get(f"{server.url}/v1/nothing").json()["error"]["type"] == "not_found_error"
    r = httpx.get(f"{server.url}/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_health_and_metrics(server):
    assert httpx.get(f"{server.url}/health").json() == {
        "status": "healthy",
        "model": "smollm2-135m-instruct",
        "device": "CPU",
        "cuda_available": False,
    }
    text = httpx.get(f"{server.url}/metrics").text
    for name in [
        "slmserve_time_to_first_token_seconds_bucket",
        "slmserve_inter_token_latency_seconds_bucket",
        "slmserve_request_latency_seconds_bucket",
        "slmserve_queue_time_seconds_bucket",
        "slmserve_requests_running",
        "slmserve_requests_waiting",
        "slmserve_prompt_tokens_total",
        "slmserve_generation_tokens_total",
    ]:
        assert name in text


def test_more_prompts_than_the_queue_can_ever_hold_is_a_400_not_a_429(server):
    # 256 waiting places: 300 prompts could never be admitted, so a retry (what a 429 invites) would never succeed.
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": ["hi"] * 300, "max_tokens": 1}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert "300 sequences" in r.json()["error"]["message"] and "256" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": ["hi"] * 3, "max_tokens": 1}, timeout=30)
    assert r.status_code == 200 and len(r.json()["choices"]) == 3
