"""Responses API items <-> chat: input items checked and given ids, a conversation of items as chat messages, and
the request's tools, tool_choice and text.format in chat completions' terms.

Items are what is stored: each response keeps the items it was made from (its predecessors' included), so a
follow-up by previous_response_id needs one read, and input_items lists what the model saw.
"""

from __future__ import annotations

from typing import Any

from slmserve.server import errors
from slmserve.server.responses.protocol import FunctionCall, TextFormat, item_id

# The text parts of a message's content; other parts (images, files, audio) a text model cannot take.
TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def _refuse(message: str, param: str) -> errors.APIError:
    return errors.APIError(400, message, param=param, code="invalid_value")


def _text(content: Any, where: str) -> str:
    """A message's content (a string or a list of parts) as one text; 400 naming a part that is not text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(f"{where}.content must be a string or a list of content parts", f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            raise _refuse(
                f"{where}.content[{j}] is of type {kind!r}; this server serves text models and takes only "
                f"{', '.join(TEXT_PARTS[:2])} parts",
                f"{where}.content[{j}].type",
            )
        texts.append(str(part.get("text", part.get("refusal", ""))))
    return "".join(texts)


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as stored items, each with an id; 400 naming an item that cannot be taken."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items = []
    for i, raw in enumerate(value):
        where, kind = f"input[{i}]", raw.get("type", "message")
        if kind == "message":
            role = raw.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise _refuse(f"{where}.role must be user, system, developer or assistant", f"{where}.role")
            part = "output_text" if role == "assistant" else "input_text"
            text = _text(raw.get("content"), where)
            content = [
                {"type": part, "text": text, "annotations": []}
                if part == "output_text"
                else {"type": part, "text": text}
            ]
            items.append(
                {
                    "type": "message",
                    "id": raw.get("id") or item_id("msg"),
                    "role": role,
                    "content": content,
                    "status": "completed",
                }
            )
        elif kind == "function_call":
            missing = [k for k in ("call_id", "name", "arguments") if not isinstance(raw.get(k), str)]
            if missing:
                raise _refuse(
                    f"{where} (a function_call) needs {', '.join(missing)} as strings", f"{where}.{missing[0]}"
                )
            call = FunctionCall(
                id=raw.get("id") or item_id("fc"), call_id=raw["call_id"], name=raw["name"], arguments=raw["arguments"]
            )
            items.append(call.model_dump())
        elif kind == "function_call_output":
            if not isinstance(raw.get("call_id"), str):
                raise _refuse(f"{where} (a function_call_output) needs its call_id", f"{where}.call_id")
            output = raw.get("output")
            output = output if isinstance(output, str) else _text(output, f"{where}.output")
            items.append(
                {
                    "type": "function_call_output",
                    "id": raw.get("id") or item_id("fco"),
                    "call_id": raw["call_id"],
                    "output": output,
                    "status": "completed",
                }
            )
        elif kind == "reasoning":
            continue  # slmserve writes no reasoning items; a client that echoes one loses nothing
        else:
            raise _refuse(f"{where} is of type {kind!r}, which this server does not take", f"{where}.type")
    return items


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation of items as chat messages: calls join the assistant message before them (one turn), a call's
    output is a tool message."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "message":
            text = "".join(part.get("text", "") for part in item["content"])
            messages.append({"role": item["role"], "content": text})
        elif item["type"] == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Function tools in chat's form; 400 naming a tool type the server cannot run (web search, files, ...)."""
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise _refuse(
                f"tools[{i}] is of type {tool.get('type')!r}; this server runs only function tools, which the "
                "client executes",
                f"tools[{i}].type",
            )
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """tool_choice in chat's form: a named function becomes {"type": "function", "function": {"name": ...}}."""
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _refuse("tool_choice must be none, auto, required or {'type': 'function', 'name': ...}", "tool_choice")


def response_format(fmt: TextFormat | None) -> dict[str, Any] | None:
    """text.format as chat's response_format."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema_ is None:
        raise _refuse("text.format of type json_schema needs its schema", "text.format.schema")
    return {"type": "json_schema", "json_schema": fmt.as_json_schema().model_dump(by_alias=True, exclude_none=True)}
