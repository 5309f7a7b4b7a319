import pytest

from slmserve.server.content_filter import ContentFilter


@pytest.mark.parametrize(
    "text, blocked",
    [
        ("I hate this", True),
        ("I HATE this", True),
        ("Violence, again.", True),
        ("whatever you say", False),  # 'hate' inside a word
        ("the hateful eight", False),
        ("a peaceful day", False),
        ("", False),
    ],
)
def test_default_words_match_whole_words_in_any_case(text, blocked):
    assert ContentFilter(["hate", "violence"]).blocks(text) is blocked


def test_any_of_several_texts_and_an_empty_list_blocks_nothing():
    f = ContentFilter(["spam"])
    assert f.blocks("ok", None, "buy SPAM now")
    assert not ContentFilter([]).blocks("hate")
    assert ContentFilter(["c++"]).blocks("I write C++ daily")  # words with symbols match too
