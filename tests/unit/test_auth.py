"""Keys from settings and files, and the token bucket behind the rate limits."""

import pytest

from slmserve.server import rate_limits
from slmserve.server.middleware import auth
from slmserve.settings import Settings


def test_keys_come_from_the_flag_and_the_file_named_or_named_by_a_hash(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nci:sk-ci\n\nsk-bare\n")
    keys = auth.load_keys(Settings(api_keys="alice:sk-a,sk-b", api_keys_file=str(keys_file)))
    assert keys["sk-a"] == "alice" and keys["sk-ci"] == "ci"
    assert keys["sk-b"].startswith("key-") and keys["sk-bare"].startswith("key-") and keys["sk-b"] != keys["sk-bare"]
    assert len(keys) == 4


@pytest.mark.parametrize(("text", "says"), [("", "holds no key"), ("name:\n", "has no key")])
def test_a_keys_file_without_keys_is_refused(tmp_path, text, says):
    keys_file = tmp_path / "keys"
    keys_file.write_text(text)
    with pytest.raises(ValueError, match=says):
        auth.load_keys(Settings(api_keys_file=str(keys_file)))
    with pytest.raises(ValueError, match="No such file"):
        auth.load_keys(Settings(api_keys_file=str(tmp_path / "missing")))


def test_the_key_never_shows_in_the_settings_repr():
    assert "sk-secret" not in repr(Settings(api_keys="sk-secret"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_capacity_a_minute_and_takes_back_what_was_not_used(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(rate_limits.time, "monotonic", clock)
    bucket = rate_limits.Bucket(60)
    assert bucket.take(50) == 0.0 and bucket.remaining() == 10
    assert bucket.take(20) == pytest.approx(10.0)  # 10 more tokens at one a second
    assert bucket.remaining() == 10  # a refused take takes nothing
    clock.now += 5
    assert bucket.remaining() == 15 and bucket.reset_seconds() == pytest.approx(45)
    bucket.give(30)
    assert bucket.remaining() == 45
    bucket.give(1000)
    assert bucket.remaining() == 60 and bucket.full
    clock.now += 3600
    assert bucket.remaining() == 60  # never above capacity


def test_the_reset_headers_read_as_openai_writes_them():
    assert rate_limits._duration(0) == "0s"
    assert rate_limits._duration(1.2345) == "1.23s"
    assert rate_limits._duration(90.5) == "1m30.5s"
    assert rate_limits._duration(360) == "6m0s"
