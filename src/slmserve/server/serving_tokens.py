"""POST /v1/embeddings, /tokenize and /detokenize: the model's tokenizer and hidden states, no generation."""

from __future__ import annotations

import base64

import numpy as np

from slmserve.models.chat_template import text_of
from slmserve.server import errors, rate_limits
from slmserve.server.middleware.record import current_record
from slmserve.server.off_loop import off_loop
from slmserve.server.protocol import embeddings as pe
from slmserve.server.serving import Serving
from slmserve.server.serving_chat import chat_messages
from slmserve.server.tools import ToolUse, render_history


def _base_model(serving: Serving, name: str | None) -> str:
    """The base model's name; 404 for an unknown model, 400 for an adapter (these routes use the base weights)."""
    if serving.check_model(name) is not None:
        raise errors.APIError(
            400, f"'{name}' is a LoRA adapter; embeddings and tokens come from the base model", param="model"
        )
    return serving.model.name


def check_token_ids(serving: Serving, token_ids: list[int], param: str) -> None:
    vocab = serving.model.tokenizer.vocab_size
    if any(not 0 <= t < vocab for t in token_ids):
        raise errors.APIError(400, f"{param} holds a token id outside the vocabulary (0 to {vocab - 1})", param=param)


async def create_embedding(serving: Serving, req: pe.EmbeddingRequest) -> pe.EmbeddingResponse:
    name = _base_model(serving, req.model)
    items = req.items
    if isinstance(items[0], str):
        encode = serving.model.tokenizer.encode
        # 2,048 long inputs take a while to tokenize: off the event loop, so other requests do not wait.
        token_lists = await off_loop(sum(map(len, items)), lambda: [encode(text, add_special=True) for text in items])
    else:
        token_lists = items
        for tokens in token_lists:
            check_token_ids(serving, tokens, "input")
    limit = serving.engine.embed_len
    if longest := max((len(t) for t in token_lists if len(t) > limit), default=0):
        raise errors.APIError(
            400,
            f"An input has {longest} tokens; this model embeds at most {limit} tokens per input.",
            param="input",
            code="context_length_exceeded",
        )
    if any(not tokens for tokens in token_lists):  # text that tokenizes to nothing, e.g. with no BOS token
        raise errors.APIError(400, "input holds text with no tokens", param="input")
    n_tokens = sum(len(t) for t in token_lists)
    if n_tokens > (cap := serving.settings.max_embed_tokens):
        raise errors.APIError(
            400,
            f"The inputs hold {n_tokens} tokens together; one request embeds at most {cap} (--max-embed-tokens).",
            param="input",
            code="context_length_exceeded",
        )
    await rate_limits.reserve_tokens(n_tokens)  # tokens a minute: all of them are used, nothing comes back
    vectors = await serving.engine.embed(token_lists)
    if req.dimensions is not None and req.dimensions != vectors.shape[1]:
        raise errors.APIError(
            400,
            f"this model's embeddings have {vectors.shape[1]} dimensions and cannot be shortened (it was not trained "
            "for it); leave out dimensions",
            param="dimensions",
        )
    serving.metrics.prompt_tokens.inc(n_tokens)
    if (record := current_record()) is not None:
        record.prompt_tokens += n_tokens
    data = [pe.Embedding(embedding=_encode(v, req.encoding_format), index=i) for i, v in enumerate(vectors)]
    return pe.EmbeddingResponse(
        data=data, model=name, usage=pe.EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens)
    )


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the openai client asks for by default and decodes as float32
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def tokenize(serving: Serving, req: pe.TokenizeRequest) -> pe.TokenizeResponse:
    _base_model(serving, req.model)
    tokenizer = serving.model.tokenizer
    if req.messages is not None:
        if not req.add_generation_prompt:
            raise errors.APIError(
                400,
                "add_generation_prompt: false is not supported: the prompt ends with the assistant's turn open",
                param="add_generation_prompt",
            )
        messages = render_history([m.model_dump(exclude_none=True) for m in req.messages])
        messages, tools = chat_messages(serving, messages, ToolUse(req.tools, "auto", True) if req.tools else None)
        size = sum(len(text_of(m.get("content"))) for m in messages)

        def encode() -> list[int]:
            return serving.chat_ids(messages, tools, add_special=bool(req.add_special_tokens))
    else:
        prompt, size = req.prompt, len(req.prompt)

        def encode() -> list[int]:
            return tokenizer.encode(prompt, add_special=req.add_special_tokens is not False)

    def work() -> pe.TokenizeResponse:
        tokens = encode()
        return pe.TokenizeResponse(
            count=len(tokens),
            max_model_len=serving.model.max_model_len,
            tokens=tokens,
            token_strs=[tokenizer.token_text(t) for t in tokens] if req.return_token_strs else None,
        )

    return await off_loop(size, work)


async def detokenize(serving: Serving, req: pe.DetokenizeRequest) -> pe.DetokenizeResponse:
    _base_model(serving, req.model)
    check_token_ids(serving, req.tokens, "tokens")
    tokenizer = serving.model.tokenizer

    # Control tokens (<|im_start|>) have no bytes in generated text; here they are spelled out, so a tokenized
    # chat prompt comes back as it went in.
    def work() -> pe.DetokenizeResponse:
        pieces = [tokenizer.token_bytes(t) or tokenizer.token_text(t).encode("utf-8") for t in req.tokens]
        return pe.DetokenizeResponse(prompt=b"".join(pieces).decode("utf-8", errors="replace"))

    return await off_loop(len(req.tokens), work)
