"""DRY against llama.cpp's rules: the penalty formula, breakers, the window, validation, determinism."""

import math
import random

import numpy as np
import pytest

from slmserve.engine.dry import DEFAULT_BREAKERS, Breakers, apply_dry, breakers_for
from slmserve.engine.sampling import SamplingParams, make_rng, sample
from tests.fakes import ScriptedRunner, make_engine, run_all

V = 16
A, B, C, D, X, Y, NL = 1, 2, 3, 4, 5, 6, 7
NEWLINE = Breakers({NL: ((),)}, frozenset({NL}))  # NL's text is a breaker by itself
F32_MAX = float(np.finfo(np.float32).max)


def dry(**kw) -> SamplingParams:
    return SamplingParams(**({"dry_multiplier": 1.0, "dry_base": 2.0, "temperature": 0} | kw))


def penalties(params: SamplingParams, history: list[int], breakers: Breakers | None = None, split: int = 0):
    """token -> the penalty DRY subtracts, for this history (its first `split` tokens as the prompt)."""
    row = np.zeros(V, dtype=np.float32)
    apply_dry(row, params, history[:split], history[split:], breakers)
    return {t: -float(row[t]) for t in np.flatnonzero(row)}


def reference(params: SamplingParams, history: list[int], breakers: Breakers | None) -> dict[int, float]:
    """llama.cpp's llama_sampler_dry_apply spelled out naively (O(n^2)): every earlier end position compared."""
    last_n = params.dry_penalty_last_n
    w = history if last_n == -1 else history[len(history) - min(last_n, len(history)) :]
    n, allowed = len(w), params.dry_allowed_length
    if n <= allowed:
        return {}
    heads = breakers.heads if breakers else {}
    limit = n
    for i in range(n):  # i tokens back from the newest
        tails = heads.get(w[n - 1 - i], ())
        fits = [len(t) for t in tails if len(t) <= i and all(t[o] == w[n - i + o] for o in range(len(t)))]
        if fits:
            limit = i - max(fits)
            break
    if limit < allowed:
        return {}
    longest: dict[int, int] = {}
    for j in range(n - 1):  # an earlier occurrence ending at j; w[j + 1] would extend the repeat
        m = 0
        while m <= j and w[j - m] == w[n - 1 - m]:
            m += 1
        m = min(m, limit)
        if m >= allowed:
            longest[w[j + 1]] = max(longest.get(w[j + 1], -1), m)
    single = breakers.single if breakers else frozenset()
    base, mult = params.dry_base, params.dry_multiplier
    cap = int(88.7228391 / math.log(base)) if base > 1.000001 else 0  # float32's range, as llama.cpp clamps
    out = {t: mult * base ** (min(m - allowed, cap) if cap else m - allowed) for t, m in longest.items()}
    return {t: min(p, F32_MAX) for t, p in out.items() if t not in single}  # logits stay finite here


def test_the_token_extending_a_repeat_is_penalized_multiplier_times_base_to_the_excess_length():
    # llama.cpp's own example: a b c c b c y a b c. "a b c" (3) recurs before "c", "b c" (2) before "y", "c"
    # (1, under the allowed 2) before "b".
    got = penalties(dry(dry_multiplier=0.8, dry_base=1.75), [A, B, C, C, B, C, Y, A, B, C])
    assert got == pytest.approx({C: 0.8 * 1.75 ** (3 - 2), Y: 0.8 * 1.75**0})
    # A five-token repeat: multiplier x base^(5 - 2) on the token that came next.
    got = penalties(dry(dry_base=3.0), [A, B, C, D, X, Y, A, B, C, D, X])
    assert got == pytest.approx({Y: 3.0**3})


def test_matches_a_naive_reading_of_llama_cpp_on_random_histories():
    rnd = random.Random(0)
    multi = Breakers({X: ((Y,), ()), D: ((A, B),), NL: ((),)}, frozenset({X, NL}))
    for trial in range(400):
        alphabet = rnd.choice([2, 3, 5, V - 1])
        history = [rnd.randrange(1, alphabet + 1) for _ in range(rnd.randrange(0, 120))]
        if trial % 3 == 0:  # long periodic runs, where the Z-box matters
            unit = history[:5] or [A]
            history = (unit * 40)[: rnd.randrange(1, 200)] + history[:10]
        params = dry(
            dry_allowed_length=rnd.choice([0, 1, 2, 3, 5]),
            dry_penalty_last_n=rnd.choice([-1, -1, 1, 7, 30, 500]),
            dry_base=rnd.choice([1.0, 1.75, 2.0]),
        )
        breakers = rnd.choice([None, NEWLINE, multi])
        split = rnd.randrange(0, len(history) + 1)
        assert penalties(params, history, breakers, split) == pytest.approx(reference(params, history, breakers))


def test_a_breaker_stops_a_match_and_is_never_penalized_itself():
    history = [A, B, C, NL, A, B, C, NL, A, B]
    # Without breakers "A B C NL A B" recurs before C: 6 tokens long.
    assert penalties(dry(), history) == pytest.approx({C: 2.0 ** (6 - 2)})
    # With NL a breaker, a match reaches back no further than the newest NL: "A B", 2 tokens.
    assert penalties(dry(), history, NEWLINE) == pytest.approx({C: 1.0})
    # "A B" would continue with NL at the start, but a breaker token is not penalized.
    assert penalties(dry(), [A, B, NL, A, B], NEWLINE) == {}
    assert penalties(dry(), [A, B, NL, A, B], None) == pytest.approx({NL: 1.0})
    # The newest token a breaker: nothing repeats past it.
    assert penalties(dry(), [A, B, A, B, NL], NEWLINE) == {}


def test_a_breaker_of_several_tokens_counts_only_when_complete():
    # X followed by Y spells a breaker; X alone does not.
    xy = Breakers({X: ((Y,),)}, frozenset())
    assert penalties(dry(), [A, B, C, X, A, B, C, X, A, B], xy) == pytest.approx({C: 2.0 ** (6 - 2)})
    assert penalties(dry(), [A, B, C, X, Y, A, B, C, X, Y, A, B], xy) == pytest.approx({C: 1.0})


def test_penalty_last_n_limits_the_window_and_the_prompt_counts():
    history = [A, B, C, D, X, Y, X, Y, NL, A, B]  # "A B" recurs 9 tokens back, before C
    assert penalties(dry(), history, split=9) == pytest.approx({C: 1.0})  # the earlier A B is in the prompt
    assert penalties(dry(dry_penalty_last_n=len(history)), history) == pytest.approx({C: 1.0})
    assert penalties(dry(dry_penalty_last_n=len(history) - 1), history) == {}  # A B's first A left the window
    assert penalties(dry(dry_penalty_last_n=0), history) == {}
    assert penalties(dry(dry_answer_only=True), history, split=9) == {}  # the loop guard's DRY: output only
    assert penalties(dry(dry_answer_only=True), history, split=0) == pytest.approx({C: 1.0})


def test_off_when_the_multiplier_is_zero():
    params = SamplingParams(temperature=0)
    assert (params.dry_multiplier, params.dry_on, params.needs_history) == (0.0, False, False)
    row = np.zeros(V, dtype=np.float32)
    row[C] = 1.0
    history = [A, B, C, A, B]
    assert sample(row, params, make_rng(0), history, [])[0] == C
    assert sample(row, dry(), make_rng(0), history, [])[0] != C
    assert dry().needs_history and not dry(dry_penalty_last_n=0).dry_on


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"dry_multiplier": -0.1}, "dry_multiplier must be >= 0"),
        ({"dry_multiplier": float("nan")}, "dry_multiplier must be >= 0"),
        ({"dry_base": 0.99}, "dry_base must be >= 1"),
        ({"dry_base": float("inf")}, "dry_base must be >= 1"),
        ({"dry_allowed_length": -1}, "dry_allowed_length must be >= 0"),
        ({"dry_penalty_last_n": -2}, "dry_penalty_last_n must be >= -1"),
        ({"dry_sequence_breakers": [""]}, "non-empty string of at most 40 bytes"),
        ({"dry_sequence_breakers": ["é" * 21]}, "non-empty string of at most 40 bytes"),
        ({"dry_sequence_breakers": ["x"] * 33}, "at most 32 strings"),
    ],
)
def test_invalid_dry_parameters_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**bad)


def test_defaults_are_llama_cpps():
    p = SamplingParams()
    assert (p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n) == (0.0, 1.75, 2, -1)
    assert p.dry_sequence_breakers == ["\n", ":", '"', "*"] == list(DEFAULT_BREAKERS)


def test_greedy_with_dry_is_deterministic_and_leaves_the_raw_logits_alone():
    rnd = np.random.default_rng(0)
    row = rnd.normal(size=V).astype(np.float32)
    history = [int(t) for t in rnd.integers(1, 4, size=300)]
    before = row.copy()
    picks = {sample(row, dry(dry_multiplier=0.8), make_rng(s), history, [], None, NEWLINE)[0] for s in range(20)}
    assert len(picks) == 1 and np.array_equal(row, before)


def test_a_huge_penalty_stays_finite_and_never_unmasks_a_grammar_ban():
    allowed = np.zeros(V, dtype=bool)
    allowed[D] = True  # C is banned, and comes first: a tie between the two would pick it
    row = np.zeros(V, dtype=np.float32)
    history = [X, A, B, C, X, A, B, D, X, A, B]  # both C and D would extend "X A B"
    for temperature in (0, 1):
        params = dry(dry_multiplier=1e30, dry_base=1e30, temperature=temperature)  # 1e60: past float32
        assert sample(row, params, make_rng(0), history, [], allowed)[0] == D


class _WordTokenizer:
    """Multi-byte tokens, so breakers can span tokens: the vocabulary is `words`, encode is greedy longest-first."""

    def __init__(self, words: list[str]) -> None:
        self.words = [w.encode() for w in words]
        self.vocab_size = len(words)

    def token_bytes(self, token_id: int) -> bytes:
        return self.words[token_id]

    def encode(self, text: str, add_special: bool = True, special: bool = True) -> list[int]:
        data, ids = text.encode(), []
        while data:
            t = max((i for i, w in enumerate(self.words) if w and data.startswith(w)), key=lambda i: len(self.words[i]))
            ids.append(t)
            data = data[len(self.words[t]) :]
        return ids


def test_breakers_compile_from_token_text_and_are_cached_per_tokenizer_and_list():
    tok = _WordTokenizer(["", "a", "b", "\n", "x:", "ab\n", "#", "##", "User", ":", "Us", "er:"])
    params = SamplingParams(dry_multiplier=0.8, dry_sequence_breakers=["\n", "User:"])
    br = breakers_for(tok, params)
    # Tokens holding a breaker are breakers alone; a token ending with a breaker's start heads its rest.
    assert br.single == {3, 5}
    assert br.heads[8] == ((9,),)  # "User" + ":"
    assert br.heads[10] == ((11,),)  # "Us" + "er:"
    assert breakers_for(tok, params) is br
    assert breakers_for(_WordTokenizer(["a", "\n"]), params) is not br
    assert breakers_for(tok, SamplingParams()) is None  # DRY off: nothing to compile


def run_script(script: bytes, **kw) -> str:
    """What a scripted model that 'wants' to say script says under these sampling params, greedy."""
    engine = make_engine(ScriptedRunner(script))
    engine.add_request("r", [ord("x")], SamplingParams(max_tokens=len(script), temperature=0, **kw))
    return run_all(engine)["r"]


def test_the_engine_applies_dry_per_request_with_its_breakers():
    loop = b"abcd" * 3
    assert run_script(loop) == loop.decode()
    # "ab" again would go on with "c": DRY (weighed far above the scripted logit) turns it off the loop.
    dried = run_script(loop, dry_multiplier=50)
    assert dried.startswith("abcdab") and dried != loop.decode()
    # ":" is a default breaker: "ab:" repeats only two tokens at a time and ":" itself is never penalized.
    assert run_script(b"ab:" * 4, dry_multiplier=50) == "ab:" * 4
