"""`slmserve bench`'s request counts: `waves` requests per user, 8 at least, unless --requests names a count."""

from dataclasses import replace

from slmserve.bench import BenchConfig


def test_each_user_sends_its_waves_of_requests_and_a_level_8_at_least():
    config = BenchConfig(
        url="http://x", levels=[1, 32], requests=None, max_tokens=8, ignore_eos=True, eos_token_ids=[0],
        model=None, prompt="p", label="l", waves=4,
    )  # fmt: skip
    assert config.requests_for(32) == 128 and config.requests_for(1) == 8
    assert replace(config, waves=2).requests_for(32) == 64  # the default, as before
    assert replace(config, requests=20).requests_for(32) == 20
