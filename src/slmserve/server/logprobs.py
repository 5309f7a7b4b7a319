"""Log probabilities in the OpenAI shapes: per token of a chat answer, or per token of a completion's text."""

from __future__ import annotations

from slmserve.engine.sampling import TokenLogprobs
from slmserve.server.protocol import openai as oa


def _text(tokenizer, token_id: int) -> str:
    return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def chat_logprobs(tokenizer, lps: list[TokenLogprobs]) -> oa.ChoiceLogprobs | None:
    """`choices[].logprobs` of a chat completion (chunk): each token with its bytes and its top alternatives."""
    if not lps:
        return None
    content = []
    for lp in lps:
        tops = [
            oa.TopLogprob(token=_text(tokenizer, t), logprob=v, bytes=list(tokenizer.token_bytes(t))) for t, v in lp.top
        ]
        token = tokenizer.token_bytes(lp.token_id)
        content.append(
            oa.TokenLogprob(
                token=token.decode("utf-8", errors="replace"), logprob=lp.logprob, bytes=list(token), top_logprobs=tops
            )
        )
    return oa.ChoiceLogprobs(content=content)


def completion_logprobs(tokenizer, lps: list[TokenLogprobs], offset: int) -> oa.CompletionLogprobs | None:
    """`choices[].logprobs` of a completion: tokens, their logprobs, top alternatives and text offsets from offset."""
    if not lps:
        return None
    out = oa.CompletionLogprobs()
    for lp in lps:
        token = _text(tokenizer, lp.token_id)
        out.tokens.append(token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({_text(tokenizer, t): v for t, v in lp.top})
        out.text_offset.append(offset)
        offset += len(token)
    return out
