"""`slmserve chat` and `slmserve generate` in a pseudo-terminal (pexpect), as a user types at them (#14)."""

from __future__ import annotations

import signal
import sys

import pexpect

PROMPT = "you> "


def _default_sigint() -> None:
    # A child inherits an ignored SIGINT, and Ctrl-C would then do nothing. Something earlier in a full test run
    # leaves the test process ignoring it (seen once: these three Ctrl-C tests failed after the cluster tests);
    # a user's shell gives a command the default, so the child gets that here too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "slmserve.cli", *args],
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
        preexec_fn=_default_sigint,
    )


def test_chat_handles_commands_itself_ctrl_c_stops_an_answer_and_ctrl_d_leaves():
    chat = spawn("chat", "--max-tokens", "600", "--temperature", "0")
    chat.expect(PROMPT)
    chat.sendline("/help")
    chat.expect("/system TEXT")
    chat.expect(PROMPT)
    assert "tokens, first after" not in chat.before  # not sent to the model

    chat.sendline("Tell me a very long story about a dragon and a knight.")
    chat.expect(r"knight\.\r\n")  # the terminal's echo of the line
    chat.expect(r"\w+ \w+ \w+")  # the answer streams
    chat.sendintr()  # Ctrl-C
    chat.expect(r"\(stopped\)")
    chat.expect(PROMPT)  # the session goes on

    chat.sendline("/system You are a pirate.")
    chat.expect(r"system prompt set: You are a pirate\.")
    chat.expect(PROMPT)
    chat.sendline("I hate dragons.")
    chat.expect("Prompt contains inappropriate content")
    chat.expect(PROMPT)
    chat.sendline("Say hello in three words.")
    chat.expect("tokens, first after")
    chat.expect(PROMPT)
    chat.sendline("/reset")
    chat.expect(r"conversation cleared")
    chat.expect(PROMPT)
    chat.sendeof()  # Ctrl-D
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    assert "Traceback" not in chat.before and "Event loop is closed" not in chat.before


def test_ctrl_c_at_the_chat_prompt_leaves_cleanly():
    chat = spawn("chat")
    chat.expect(PROMPT)
    chat.sendintr()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0 and "Traceback" not in chat.before


def test_ctrl_c_stops_generate_with_130_and_no_traceback():
    gen = spawn("generate", "Write a very long essay about the sea.", "--max-tokens", "800", "--temperature", "0")
    gen.expect(r"\w+ \w+ \w+ \w+")
    gen.sendintr()
    gen.expect(pexpect.EOF)
    gen.close()
    assert gen.exitstatus == 130
    assert "(stopped)" in gen.before and "Traceback" not in gen.before


def test_an_adapter_that_is_not_loaded_is_refused_by_name():
    gen = spawn("generate", "hi", "--use-adapter", "pirate")
    gen.expect(pexpect.EOF)
    gen.close()
    assert gen.exitstatus == 2 and "no LoRA adapter 'pirate'" in gen.before


def test_generate_refuses_a_blocked_prompt_with_exit_1():
    gen = spawn("generate", "I hate mondays.")
    gen.expect(pexpect.EOF)
    gen.close()
    assert gen.exitstatus == 1 and "Prompt contains inappropriate content" in gen.before
