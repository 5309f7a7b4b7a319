"""`slmserve generate` / `chat` without a model: the figures line under an answer, and chat's opening hint."""

import asyncio

from slmserve.engine.async_engine import accepted
from slmserve.engine.engine import RequestOutput
from slmserve.terminal import HINT, prompt_lines, stream_answer


def test_time_to_first_token_counts_from_the_first_token_not_the_engines_accepted_message():
    now = [0.0]
    shown = []

    async def outputs():
        yield accepted("r", 5)  # at once: the engine took the request
        now[0] = 0.5
        yield RequestOutput("r", "", [7], 5, 1)  # a token whose text is held back (half a UTF-8 character)
        now[0] = 0.6
        yield RequestOutput("r", "Hello", [8], 5, 2)
        now[0] = 0.9
        yield RequestOutput("r", " world", [9], 5, 3, finish_reason="stop")

    text, line = asyncio.run(stream_answer(outputs(), shown.append, clock=lambda: now[0]))
    assert text == "Hello world" and "".join(shown) == text
    assert line == "3 tokens, first after 0.50 s, 5.0 tok/s"  # 2 tokens in the 0.4 s after the first


def test_an_answer_with_no_token_reports_the_whole_wait():
    now = [0.0]

    async def outputs():
        yield accepted("r", 5)
        now[0] = 0.3
        yield RequestOutput("r", "", [], 5, 0, finish_reason="abort")

    assert asyncio.run(stream_answer(outputs(), print, clock=lambda: now[0]))[1] == (
        "0 tokens, first after 0.30 s, 0.0 tok/s"
    )


def test_chat_opens_with_a_one_line_hint_of_its_commands(monkeypatch, capsys):
    def typed(prompt):
        raise EOFError  # Ctrl-D at once

    monkeypatch.setattr("builtins.input", typed)
    assert list(prompt_lines()) == []
    err = capsys.readouterr().err
    assert err.strip() == HINT and "/help" in HINT
