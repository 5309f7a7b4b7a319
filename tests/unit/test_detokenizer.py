from slmserve.engine.detokenizer import Detokenizer


def byte_tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def one_byte(t: int) -> bytes:
    return bytes([t])


def feed(det: Detokenizer, tokens: list[int]) -> list[str]:
    deltas = []
    for t in tokens:
        deltas.append(det.push(t))
        if det.stop_reason:
            break
    else:
        deltas.append(det.flush())
    return deltas


def test_multibyte_characters_split_across_tokens_come_out_whole():
    deltas = feed(Detokenizer(one_byte), byte_tokens("héllo €"))
    assert "".join(deltas) == "héllo €"
    assert all("\ufffd" not in d for d in deltas)
    assert deltas[1] == ""  # the first byte of é alone is held back


def test_stop_string_spanning_tokens_cuts_the_text_before_it():
    det = Detokenizer(lambda t: [b"Hel", b"lo ##", b"#EN", b"D more"][t], stop=["###END"])
    deltas = feed(det, [0, 1, 2, 3])
    assert "".join(deltas) == "Hello "
    assert det.stop_reason == "###END"
    assert det.text == "Hello "


def test_text_that_only_starts_like_a_stop_string_is_released_later():
    det = Detokenizer(lambda t: [b"a #", b"#", b"b"][t], stop=["###"])
    assert det.push(0) == "a "
    assert det.push(1) == ""  # "##" may still become "###"
    assert det.push(2) == "##b"
    assert det.stop_reason is None


def test_streamed_deltas_add_up_to_the_final_text():
    pieces = [b"The ", b"answer", b" is", b" 42", b".\n", b"STOP", b" x"]
    det = Detokenizer(lambda t: pieces[t], stop=["\nSTOP"])
    assert "".join(feed(det, list(range(len(pieces))))) == det.text == "The answer is 42."


def test_broken_utf8_at_the_end_is_replaced_not_dropped():
    det = Detokenizer(one_byte)
    assert det.push(0xE2) == ""
    assert det.flush() == "\ufffd"
