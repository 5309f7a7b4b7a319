"""/v1/embeddings, /tokenize and /detokenize against a live server, through the official openai client and raw HTTP."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

SENTENCES = [
    "The cat sat on the mat.",
    "A kitten is sitting on a rug.",
    "Stock markets fell sharply today.",
    "Investors sold shares as prices dropped.",
]


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)


def model_name(server) -> str:
    return httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]


def embed(server, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json={"model": model_name(server), **body}, timeout=120)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data])


def test_the_openai_client_gets_normalized_vectors_that_rank_meaning(server, client):
    r = client.embeddings.create(model=model_name(server), input=SENTENCES)  # the client asks for base64
    e = np.array([d.embedding for d in r.data])
    assert e.shape[0] == 4 and e.shape[1] >= 64
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    sim = e @ e.T
    # Each sentence is nearer its paraphrase than either sentence of the other pair.
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert sim[2, 3] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert r.usage.prompt_tokens == r.usage.total_tokens > 4 * 5


def test_float_and_base64_agree_and_a_batch_equals_its_inputs_alone(server):
    batch = vectors(embed(server, input=SENTENCES))
    raw = embed(server, input=SENTENCES[1], encoding_format="base64").json()["data"][0]["embedding"]
    alone = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert np.allclose(alone, batch[1], atol=1e-5)


def test_token_ids_embed_like_their_text(server):
    tokens = httpx.post(f"{server.url}/tokenize", json={"prompt": SENTENCES[2]}).json()["tokens"]
    by_ids = vectors(embed(server, input=tokens))
    by_lists = vectors(embed(server, input=[tokens, tokens[:3]]))
    by_text = vectors(embed(server, input=SENTENCES[2]))
    assert np.allclose(by_ids[0], by_text[0], atol=1e-5) and np.allclose(by_lists[0], by_text[0], atol=1e-5)
    assert not np.allclose(by_lists[1], by_text[0], atol=1e-2)


def test_more_inputs_than_one_engine_call_takes_come_back_in_order(server):
    inputs = [f"Item number {i} is a {'red' if i % 2 else 'blue'} box." for i in range(150)]  # 3 calls of <= 64
    many = vectors(embed(server, input=inputs))
    assert many.shape[0] == 150
    alone = vectors(embed(server, input=[inputs[i] for i in (0, 77, 149)]))
    # Wide batches take other matmul kernels than narrow ones, so equal to float rounding, not bit for bit; and each
    # vector is nearest its own input's (the order held across the calls).
    sim = many[[0, 77, 149]] @ alone.T
    assert np.all(np.diag(sim) > 0.999) and np.all(sim.argmax(axis=1) == [0, 1, 2])


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"input": ""}, None, 400),
        ({"input": []}, None, 400),
        ({"input": [[]]}, None, 400),
        ({"input": [49152 * 10]}, "input", 400),
        ({"input": "word " * 3000}, "input", 400),  # over the per-input bound
        ({"input": ["x"] * 2049}, None, 400),
        ({"input": "hi", "dimensions": 3}, "dimensions", 400),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format", 400),
        ({"input": "hi", "model": "no-such-model"}, "model", 404),
    ],
)
def test_bad_embeddings_requests_are_4xx_in_openai_shape(server, body, param, status):
    r = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and (param is None or error["param"] == param)


def test_inputs_past_the_request_token_cap_are_refused_before_any_embedding(server):
    # 33 inputs of 500 tokens: each within the per-input bound (512 on torch), together past --max-embed-tokens.
    r = embed(server, input=[" word" * 500] * 33)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input" and error["code"] == "context_length_exceeded"
    assert "16500 tokens together" in error["message"] and "at most 16384 (--max-embed-tokens)" in error["message"]
    assert vectors(embed(server, input=[" word" * 500] * 2)).shape[0] == 2  # what fits is served


def test_tokenize_counts_what_a_chat_completion_is_billed(server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]
    t = httpx.post(f"{server.url}/tokenize", json={"messages": messages, "return_token_strs": True}).json()
    chat = httpx.post(
        f"{server.url}/v1/chat/completions", json={"messages": messages, "max_tokens": 2}, timeout=60
    ).json()
    assert t["count"] == len(t["tokens"]) == len(t["token_strs"]) == chat["usage"]["prompt_tokens"]
    assert t["max_model_len"] > t["count"]
    back = httpx.post(f"{server.url}/detokenize", json={"tokens": t["tokens"]}).json()["prompt"]
    assert "Name a color." in back and back == "".join(t["token_strs"])


def test_tokenize_and_detokenize_round_trip_text(server):
    text = "Héllo, wörld! 你好 🙂"
    t = httpx.post(f"{server.url}/tokenize", json={"prompt": text}).json()
    assert t["count"] == len(t["tokens"]) > 3 and "token_strs" not in t
    assert httpx.post(f"{server.url}/detokenize", json={"tokens": t["tokens"]}).json()["prompt"].strip() == text


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/tokenize", {}, 400),
        ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400),
        ("/tokenize", {"prompt": "a", "model": "nope"}, 404),
        ("/detokenize", {"tokens": [-1]}, 400),
        ("/detokenize", {"tokens": "abc"}, 400),
    ],
)
def test_bad_tokenize_requests_are_4xx_in_openai_shape(server, path, body, status):
    r = httpx.post(f"{server.url}{path}", json=body)
    assert r.status_code == status and r.json()["error"]["message"]
