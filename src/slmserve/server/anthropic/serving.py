"""POST /v1/messages and /v1/messages/count_tokens: a Messages request is made a chat request (same prompt,
grammar, admission, limits and engine); its answer is made a message, or Anthropic's streamed events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from slmserve.server import errors
from slmserve.server.anthropic.events import stop_reason, stream_events, tool_use_id
from slmserve.server.anthropic.protocol import (
    CountTokensRequest,
    Message,
    MessagesRequest,
    TextBlock,
    TokenCount,
    ToolUseBlock,
    Usage,
)
from slmserve.server.protocol import openai as oa
from slmserve.server.responses.serving import PASSED_ON
from slmserve.server.serving import Serving
from slmserve.server.serving_chat import chat_prompt, prepare_chat, validated_chat_request

# tool_choice's types in chat completions' terms ("tool" names one).
CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _refuse(message: str, param: str) -> errors.APIError:
    return errors.APIError(400, message, param=param)


def _text(content: Any, where: str) -> str:
    """A system prompt or tool result (a string or text blocks) as one text; 400 naming a block that is not text."""
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(content or []):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            raise _refuse(f"{where}[{j}]: a block of type {kind!r} where only text is taken", f"{where}[{j}].type")
        texts.append(str(block.get("text", "")))
    return "".join(texts)


def chat_messages(system: Any, messages: list) -> list[dict[str, Any]]:
    """System and messages as chat messages: tool_use blocks become the assistant's tool calls, tool_result blocks
    tool messages (before the user's text that came with them); images and documents are refused by name."""
    out: list[dict[str, Any]] = [{"role": "system", "content": _text(system, "system")}] if system else []
    for i, m in enumerate(messages):
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts, calls, results = [], [], []
        for j, block in enumerate(m.content):
            kind, where = block.get("type"), f"messages[{i}].content[{j}]"
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "tool_use" and m.role == "assistant":
                arguments = json.dumps(block.get("input") or {})
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
            elif kind == "tool_result" and m.role == "user":
                text = _text(block.get("content", ""), f"{where}.content")
                text = f"Error: {text}" if block.get("is_error") else text
                results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
            elif kind in ("thinking", "redacted_thinking"):
                continue  # slmserve writes none; a client that echoes one loses nothing
            else:
                raise _refuse(
                    f"{where} is a {kind!r} block, which this server does not take in a {m.role} message",
                    f"{where}.type",
                )
        out += results
        if texts or calls:
            out.append({"role": m.role, "content": "".join(texts) or None, **({"tool_calls": calls} if calls else {})})
    return out


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Client tools (name, description, input_schema) as chat's function tools; Anthropic's server tools (web
    search, code execution, ...) are a 400 naming them."""
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type", "custom") != "custom":
            raise _refuse(
                f"tools[{i}] is Anthropic's {tool['type']!r} tool, which this server cannot run", f"tools[{i}].type"
            )
        fn = {"name": tool.get("name"), "description": tool.get("description"), "parameters": tool.get("input_schema")}
        out.append({"type": "function", "function": {k: v for k, v in fn.items() if v is not None}})
    return out


def chat_request(req: CountTokensRequest, **fields: Any) -> oa.ChatCompletionRequest:
    """The chat request a Messages request amounts to; 400 naming a field chat's checks refuse."""
    choice = req.tool_choice or {"type": "auto"}
    kind = choice.get("type")
    if kind == "tool":
        chosen: Any = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in CHOICES:
        chosen = CHOICES[kind]
    else:
        raise _refuse("tool_choice.type must be auto, any, tool or none", "tool_choice.type")
    parallel = not choice.get("disable_parallel_tool_use", False)
    body = {k: v for k, v in req.extras().items() if k in PASSED_ON}
    body |= {"model": req.model, "messages": chat_messages(req.system, req.messages), "tools": chat_tools(req.tools)}
    body |= {"tool_choice": chosen if req.tools else None, "parallel_tool_calls": parallel, **fields}
    return validated_chat_request(body)


async def create_message(serving: Serving, req: MessagesRequest) -> Message | AsyncIterator[str]:
    sampling = {"max_tokens": req.max_tokens, "stop": req.stop_sequences}
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(req, name)) is not None:
            sampling[name] = value
    run = await prepare_chat(serving, chat_request(req, **sampling))
    if req.stream:
        return stream_events(await run.chunks(include_usage=True), run.model, len(run.prompt_ids))
    completion = await run.complete()
    choice = completion.choices[0]
    content: list[TextBlock | ToolUseBlock] = []
    if choice.message.content or not choice.message.tool_calls:
        content.append(TextBlock(text=choice.message.content or ""))
    for call in choice.message.tool_calls or []:
        content.append(
            ToolUseBlock(id=tool_use_id(call.id), name=call.function.name, input=json.loads(call.function.arguments))
        )
    reason, sequence = stop_reason(choice.finish_reason, choice.stop_reason)
    used = Usage(input_tokens=completion.usage.prompt_tokens, output_tokens=completion.usage.completion_tokens)
    return Message(model=run.model, content=content, stop_reason=reason, stop_sequence=sequence, usage=used)


async def count_tokens(serving: Serving, req: CountTokensRequest) -> TokenCount:
    """The prompt's tokens as the model would see them: system, messages and tools."""
    prompt_ids, _ = await chat_prompt(serving, chat_request(req))
    return TokenCount(input_tokens=len(prompt_ids))
