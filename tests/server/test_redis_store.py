"""The shared store (--store-url redis://...) on a real redis-server: two servers (a cluster's gateway replicas)
see the same responses; its size cap; Redis down is a clear error at start and a 503 at a request, not a 500."""

from __future__ import annotations

import asyncio

import openai
import pytest
import redis

from slmserve.server.redis_store import RedisStore
from slmserve.server.store import StoreError
from tests.services import redis_server


@pytest.fixture
def redis_url():
    with redis_server() as url:
        yield url


def client_of(served) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=served, max_retries=0)


def test_two_servers_share_their_stored_responses(serve, redis_url):
    one, two = client_of(serve(b"from one", store_url=redis_url)), client_of(serve(b"from two", store_url=redis_url))
    first = one.responses.create(model="fake", input="Hi")
    assert two.responses.retrieve(first.id).output_text == "from one"
    follow = two.responses.create(model="fake", input="And you?", previous_response_id=first.id)
    items = one.responses.input_items.list(follow.id, order="asc")
    assert [i.content[0].text for i in items.data] == ["Hi", "from one", "And you?"]
    two.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        one.responses.retrieve(first.id)


def test_the_size_cap_drops_the_oldest(redis_url):
    async def run() -> tuple[list[bool], int]:
        store = RedisStore(redis_url, retention_s=3600, max_bytes=1000)
        for i in range(5):
            await store.put(f"r{i}", {"text": "x" * 300})
        kept = [await store.get(f"r{i}") is not None for i in range(5)]
        total = int(await store._redis.get("slmserve:responses:bytes"))
        await store.close()
        return kept, total

    kept, total = asyncio.run(run())
    assert kept == [False, False, True, True, True] and total <= 1000


def test_redis_down_is_an_error_at_start_and_a_503_at_a_request(serve, redis_url):
    with pytest.raises(StoreError, match="cannot be reached"):
        RedisStore("redis://127.0.0.1:1/0", 60, 1000)
    served = serve(b"ok", store_url=redis_url)
    redis.Redis.from_url(redis_url).shutdown(nosave=True)
    r = served.post("/v1/responses", json={"input": "Hi"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    m = served.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert m.status_code == 200  # only the stored state is gone, not the server


def test_two_servers_share_one_rate_limit_bucket_a_key(serve, redis_url):
    limits = {"store_url": redis_url, "api_keys": ["alice:sk-a", "bob:sk-b"], "rate_limit_rpm": 3}
    one, two = serve(b"ok", **limits), serve(b"ok", **limits)
    alice = {"Authorization": "Bearer sk-a"}
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    codes = [s.post("/v1/chat/completions", json=chat, headers=alice).status_code for s in (one, two, one, two)]
    assert codes == [200, 200, 200, 429]  # three a minute for alice over both servers, not three each
    r = one.post("/v1/chat/completions", json=chat, headers={"x-api-key": "sk-b"})
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "2"  # bob's own bucket


def test_shared_token_limits_settle_what_a_request_did_not_use(serve, redis_url):
    limits = {"store_url": redis_url, "api_keys": ["sk-a"], "rate_limit_tpm": 500}
    one, two = serve(b"ok", **limits), serve(b"ok", **limits)
    key = {"Authorization": "Bearer sk-a"}
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300}
    assert one.post("/v1/chat/completions", json=chat, headers=key).status_code == 200
    # ~55 tokens used of the ~350 reserved: the rest came back, so the other server can reserve as much again.
    r = two.post("/v1/chat/completions", json=chat, headers=key)
    assert r.status_code == 200 and int(r.headers["x-ratelimit-remaining-tokens"]) < 500 - 100
    assert two.post("/v1/chat/completions", json=chat | {"max_tokens": 400}, headers=key).status_code == 429


def test_rate_limits_outlive_redis_going_down(serve, redis_url):
    served = serve(b"ok", store_url=redis_url, api_keys=["sk-a"], rate_limit_rpm=2)
    key = {"Authorization": "Bearer sk-a"}
    redis.Redis.from_url(redis_url).shutdown(nosave=True)
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    codes = [served.post("/v1/chat/completions", json=chat, headers=key).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # this server's own bucket holds the limit meanwhile
