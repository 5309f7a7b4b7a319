"""Pure measures behind the tools: text diversity and repetition, and quantiles of Prometheus histogram deltas.

No I/O and no matplotlib, so they are unit-tested on hand-made inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the units distinct-n and repetition count."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams across the samples (Li et al., 2016); 0.0 when there are none.

    Identical samples score at most 1/len(texts): the measure is of diversity *across* samples.
    """
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of a sample's word n-grams that already occurred earlier in the same sample.

    Trigrams, not words: natural text repeats "the" and "of the"; a degenerate loop repeats whole phrases.
    """
    grams = ngrams(words(text), n)
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams) if grams else 0.0


def mean(values: Sequence[float]) -> float | None:
    """The mean, or None for no values (JSON has no NaN)."""
    return sum(values) / len(values) if values else None


def bucket_deltas(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative (le, count) buckets observed in an interval: after - before, bucket by bucket.

    A counter that went down means the server restarted; the interval then counts from zero.
    """
    old = dict(before)
    deltas = [(le, count - old.get(le, 0.0)) for le, count in after]
    if any(d < 0 for _, d in deltas):
        return list(after)
    return deltas


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative (le, count) buckets, interpolated linearly inside its bucket, as Prometheus'
    histogram_quantile() does. None when the buckets hold no observations.

    A quantile that falls in the +Inf bucket is reported as the largest finite bound.
    """
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le
