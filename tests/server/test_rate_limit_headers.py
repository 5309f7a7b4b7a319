"""x-ratelimit-* headers on every response say the key's buckets as they stand, also on a request that took
nothing from one of them."""

from __future__ import annotations


def test_a_request_that_takes_no_tokens_still_shows_what_is_left(serve):
    served = serve(b"ok", api_keys=["sk-a"], rate_limit_rpm=10, rate_limit_tpm=1000)
    key = {"Authorization": "Bearer sk-a"}
    chat = served.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}, headers=key
    )
    left = int(chat.headers["x-ratelimit-remaining-tokens"])
    assert chat.status_code == 200 and left < 1000
    models = served.get("/v1/models", headers=key)
    assert models.headers["x-ratelimit-remaining-requests"] == "8"
    assert left <= int(models.headers["x-ratelimit-remaining-tokens"]) < 1000
