import numpy as np
import pytest

from slmserve.engine.sampling import SamplingParams, make_rng, sample


def logits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def draws(params: SamplingParams, row: np.ndarray, n: int = 200, seed: int | None = 0) -> list[int]:
    rng = make_rng(seed)
    return [sample(row, params, rng, [], [])[0] for _ in range(n)]


def test_temperature_zero_is_argmax():
    assert sample(logits([0.1, 3.0, 2.9]), SamplingParams(temperature=0), make_rng(1), [], [])[0] == 1


def test_same_seed_gives_the_same_draws_and_another_seed_differs():
    row = np.zeros(50, dtype=np.float32)
    params = SamplingParams(temperature=1.0)
    assert draws(params, row, seed=42) == draws(params, row, seed=42)
    assert draws(params, row, seed=42) != draws(params, row, seed=43)


def test_top_k_one_and_tiny_top_p_reduce_to_the_best_token():
    row = np.random.default_rng(0).normal(size=5000).astype(np.float32)
    best = int(np.argmax(row))
    assert set(draws(SamplingParams(temperature=1.5, top_k=1), row)) == {best}
    assert set(draws(SamplingParams(temperature=1.5, top_p=1e-6), row)) == {best}


def test_top_k_keeps_exactly_k_candidates():
    row = logits([5, 4, 3, 2, 1, 0])
    assert set(draws(SamplingParams(temperature=5, top_k=3), row, n=2000)) == {0, 1, 2}


def test_top_p_keeps_the_nucleus_even_beyond_the_candidate_shortlist():
    row = np.zeros(4000, dtype=np.float32)  # flat: 90% of the mass needs 3600 tokens, past the shortlist
    got = set(draws(SamplingParams(temperature=1, top_p=0.9), row, n=3000))
    assert len(got) > 1500


def test_min_p_drops_unlikely_tokens():
    row = np.log(np.asarray([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    assert set(draws(SamplingParams(temperature=1, min_p=0.2), row, n=2000)) == {0, 1, 2}


def test_logit_bias_can_force_or_ban_a_token():
    row = logits([3, 2, 1])
    assert set(draws(SamplingParams(temperature=1, logit_bias={2: 100}), row)) == {2}
    assert 0 not in draws(SamplingParams(temperature=0, logit_bias={0: -100}), row)


def test_penalties_push_away_from_repeated_tokens():
    row = logits([2.0, 1.9])
    assert sample(row, SamplingParams(temperature=0, frequency_penalty=0.5), make_rng(0), [], [0])[0] == 1
    assert sample(row, SamplingParams(temperature=0, presence_penalty=0.2), make_rng(0), [], [0])[0] == 1
    assert sample(row, SamplingParams(temperature=0, repetition_penalty=1.2), make_rng(0), [0], [])[0] == 1
    assert row[0] == 2.0  # the runner's logits are never modified in place


def test_logprobs_are_a_normalised_log_distribution():
    row = logits([1.0, 2.0, 3.0])
    token, lp = sample(row, SamplingParams(temperature=0, logprobs=2), make_rng(0), [], [])
    assert token == 2 and lp.token_id == 2
    assert [t for t, _ in lp.top] == [2, 1]
    assert np.isclose(np.exp([v for _, v in lp.top]).sum() + np.exp(1 - np.log(np.exp(row).sum())), 1.0)


@pytest.mark.parametrize(
    "bad",
    [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(max_tokens=0), dict(min_p=2), dict(stop=[""])],
)
def test_invalid_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_a_tiny_temperature_or_repetition_penalty_is_argmax_and_never_nan():
    import warnings

    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow or NaN in the sampler fails the test
        for temperature in (1e-300, 5e-324, 1e-6):
            token, _ = sample(logits, SamplingParams(temperature=temperature), np.random.default_rng(0), [], [])
            assert token == 1
        params = SamplingParams(temperature=1.0, repetition_penalty=1e-300)
        for seed in range(5):
            token, _ = sample(logits, params, np.random.default_rng(seed), [2], [])
            assert token == 2  # the seen token's positive logit grows to the largest finite value


def test_a_gemma_sized_row_draws_each_token_in_proportion_and_never_a_ruled_out_one():
    row = np.full(262_144, -np.inf, dtype=np.float32)  # Gemma 3's vocabulary: the draw goes block by block
    picks = {5: 0.1, 70_000: 0.15, 70_001: 0.25, 262_140: 0.5}  # in the first block, two in a middle one, the last
    for token, p in picks.items():
        row[token] = np.log(p)
    allowed = np.ones(len(row), dtype=bool)
    allowed[262_143] = False  # the last token: where rounding would land, were it not ruled out
    rng = make_rng(7)
    got = [sample(row, SamplingParams(temperature=1), rng, [], [], allowed)[0] for _ in range(3000)]
    assert set(got) == set(picks)
    for token, p in picks.items():
        assert abs(got.count(token) / len(got) - p) < 0.04


@pytest.mark.parametrize("n_allowed", [3, 200_000])
def test_greedy_under_a_mask_is_the_best_allowed_token_the_lowest_on_a_tie(n_allowed):
    row = np.random.default_rng(0).normal(size=262_144).astype(np.float32)
    best = int(np.argmax(row))
    row[best] = 100  # ruled out below; the tie's value is then above every other allowed token's
    allowed = np.zeros(len(row), dtype=bool)
    allowed[np.random.default_rng(1).permutation(len(row))[:n_allowed]] = True
    allowed[best] = False
    tie = np.flatnonzero(allowed)[:2]
    row[tie] = 50  # two allowed tokens share the best allowed value
    token, _ = sample(row, SamplingParams(temperature=0), make_rng(0), [], [], allowed)
    assert token == tie[0]
    allowed[best] = True
    assert sample(row, SamplingParams(temperature=0), make_rng(0), [], [], allowed)[0] == best
