"""Tool calling: tools -> prompt and grammar, the model's text -> message.tool_calls. Both directions live here.

The model writes each call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes / Qwen
form, which templates that take `tools` ask for too). A model whose chat template takes `tools` gets them
through it; any other model gets them in a system prompt (TOOLS_PROMPT). The grammar enforces the form:
`required` and a named function allow only calls, each call's arguments valid against that tool's parameters;
`auto` allows a call or a plain answer (which then cannot begin with "<"); `none` keeps tools out of the prompt.
With parallel_tool_calls an answer holds at most one call per tool given: the engine's loop guard takes back a
second call of a tool, and the calls end there. With `auto`, a call identical to one the conversation already
holds a result for is taken back the same way, and the model answers in text (`answered_calls`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from slmserve.engine.loop_guard import call_key
from slmserve.engine.structured import JSON_OPTIONS, closed_objects, grammar_from
from slmserve.models.chat_template import text_of
from slmserve.server import errors
from slmserve.server.protocol import openai as oa

OPEN, CLOSE = "<tool_call>", "</tool_call>"

TOOLS_PROMPT = """You may call functions to answer. The functions, as JSON schemas:
<tools>
{tools}
</tools>
To call a function, answer with one <tool_call></tool_call> block per call, each holding a JSON object:
<tool_call>
{{"name": "function_name", "arguments": {{"arg": "value"}}}}
</tool_call>"""


# A plain answer beside calls: it cannot begin with "<" (a call does) nor hold a call's tag anywhere (a small model
# that may not call writes the tags into its text, `You can call the <tool_call><tool_call>...`).
TEXT = "/[^<](?s:.)*/ & ~/(?s:.*)<tool_call>(?s:.*)/"
# An answer with no tools when the history holds calls: a small model copies their blocks into its text.
NO_CALLS = f"start: TEXT\nTEXT: /(?s:.*)/ & ~/(?s:.*){OPEN}(?s:.*)/\n"  # (a bare ~ allows all: llguidance)


def _call_schema(tool: oa.Tool) -> dict[str, Any]:
    # No parameters: an empty object, as OpenAI takes it (and nothing for a model to ramble in).
    parameters = tool.function.parameters or {"type": "object", "properties": {}, "additionalProperties": False}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": closed_objects(parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        "x-guidance": JSON_OPTIONS,
    }


@dataclass
class ToolUse:
    """The tools of one request that may call them (tool_choice is not "none")."""

    tools: list[oa.Tool]
    choice: str  # "auto", "required" or a function's name
    parallel: bool
    answer: dict[str, Any] | None = None  # with "auto": the JSON schema a plain answer must follow (response_format)
    answered: list[str] = field(default_factory=list)  # the history's calls that have results (answered_calls)

    @classmethod
    def of(cls, req: oa.ChatCompletionRequest) -> ToolUse | None:
        """The request's tool use, None when it has none; 400 for a choice that names no given tool."""
        choice = req.tool_choice
        if choice is not None and not req.tools and choice != "none":
            raise errors.APIError(400, "tool_choice needs tools", param="tool_choice")
        if not req.tools or choice == "none":
            return None
        if isinstance(choice, oa.NamedToolChoice):
            names = [t.function.name for t in req.tools]
            if choice.function.name not in names:
                message = f"tool_choice names {choice.function.name!r}, which is not among the tools: {names}"
                raise errors.APIError(400, message, param="tool_choice")
            choice = choice.function.name
        fmt, answer = req.response_format, None
        if fmt is not None and fmt.type in ("json_schema", "json_object"):
            answer = fmt.json_schema.schema_ if fmt.type == "json_schema" else {"type": "object"}
        elif fmt is not None and fmt.type != "text":
            message = "with tools, response_format may be text, json_object or json_schema"
            raise errors.APIError(400, message, param="response_format")
        history = [m.model_dump(exclude_none=True) for m in req.messages]
        return cls(req.tools, choice or "auto", req.parallel_tool_calls, answer, answered_calls(history))

    def grammar(self) -> str:
        """A Lark grammar (llguidance) for this request's answer."""
        tools = [t for t in self.tools if self.choice in ("auto", "required", t.function.name)]
        schema = {"anyOf": [_call_schema(t) for t in tools]} if len(tools) > 1 else _call_schema(tools[0])
        call = f'"{OPEN}\\n" %json {json.dumps(schema)} "\\n{CLOSE}"'
        # Parallel calls: as many as tools given; the loop guard takes back a second call of the same tool (a
        # small model, once it has called, goes on calling the same function to max_tokens). A newline may end
        # the calls: the model writes one after a call by habit, and must not be made to begin another with it.
        more = len(tools) - 1 if self.parallel else 0
        calls = f'call ("\\n" call){{0,{more}}} "\\n"?' if more else 'call "\\n"?'
        if self.choice != "auto":
            start = f"start: {calls}"
        elif self.answer is not None:  # a call, or an answer in the response_format's schema
            answer = {**closed_objects(self.answer), "x-guidance": JSON_OPTIONS}
            start = f"start: {calls} | answer\nanswer: %json {json.dumps(answer)}"
        else:
            start = f"start: {calls} | TEXT\nTEXT: {TEXT}"
        return grammar_from("lark", f"{start}\ncall: {call}\n")

    def prompt_messages(self, messages: list[dict[str, Any]], template_takes_tools: bool) -> list[dict[str, Any]]:
        """The messages with the tools described in the system prompt, unless the template renders them."""
        if template_takes_tools:
            return messages
        listing = "\n".join(json.dumps(t.function.model_dump(exclude_none=True)) for t in self.tools)
        described = TOOLS_PROMPT.format(tools=listing)
        if messages and messages[0].get("role") == "system":
            first = messages[0]
            return [{**first, "content": f"{first.get('content') or ''}\n\n{described}"}, *messages[1:]]
        return [{"role": "system", "content": described}, *messages]

    @staticmethod
    def parse(text: str) -> tuple[str | None, list[oa.ToolCall]]:
        """The model's text -> (content, tool calls). Text that is not calls is content; after complete calls, an
        unfinished one (cut by max_tokens with the budget close off) is dropped and the complete ones kept."""
        calls, rest = [], text.strip()
        while rest.startswith(OPEN):
            body, sep, rest = rest[len(OPEN) :].partition(CLOSE)
            try:
                call = json.loads(body)
                name, arguments = call["name"], call["arguments"]
            except (ValueError, KeyError, TypeError):
                return (None, calls) if calls else (text, [])
            if not sep:
                return (None, calls) if calls else (text, [])
            fn = oa.FunctionCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False))
            calls.append(oa.ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=fn))
            rest = rest.lstrip()
        if rest or not calls:
            return text, []
        return None, calls


# The grammar writes each call in one form: `<tool_call>\n{"name": "NAME", "arguments": {...}}\n</tool_call>`.
_HEAD = re.compile(r'\s*<tool_call>\n\{"name": "([^"\\]*)", "arguments": ')
_TAIL = re.compile(r"\}\n</tool_call>")


class CallStream:
    """A growing answer of tool calls -> OpenAI's streamed deltas: a call's first delta (index, id, type, name) as
    soon as its name is written, then its arguments in fragments as the model writes them."""

    def __init__(self) -> None:
        self.text = ""
        self.pos = 0  # how far the text is turned into deltas
        self.calls = 0  # calls begun
        self._state = "head"  # then "arguments", then "tail" (the call's closing), then "head" again
        self._depth = 0  # brackets open inside the arguments
        self._in_string = self._escape = False

    def feed(self, text: str) -> list[oa.DeltaMessage]:
        self.text += text
        deltas = []
        while True:
            if self._state == "head":
                if not (m := _HEAD.match(self.text, self.pos)):
                    return deltas
                head = oa.DeltaFunctionCall(name=m.group(1), arguments="")
                call_id = f"call_{uuid.uuid4().hex[:24]}"
                call = oa.DeltaToolCall(index=self.calls, id=call_id, type="function", function=head)
                deltas.append(oa.DeltaMessage(tool_calls=[call]))
                self.calls, self.pos, self._state = self.calls + 1, m.end(), "arguments"
            elif self._state == "arguments":
                start, done = self.pos, self._scan()
                if self.pos > start:
                    fragment = oa.DeltaFunctionCall(arguments=self.text[start : self.pos])
                    call = oa.DeltaToolCall(index=self.calls - 1, function=fragment)
                    deltas.append(oa.DeltaMessage(tool_calls=[call]))
                if not done:
                    return deltas
                self._state = "tail"
            else:
                if not (m := _TAIL.match(self.text, self.pos)):
                    return deltas
                self.pos, self._state = m.end(), "head"

    def _scan(self) -> bool:
        """Move pos over the arguments' JSON; True once their closing bracket is passed."""
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if self._escape:
                self._escape = False
            elif self._in_string:
                self._escape, self._in_string = c == "\\", c != '"'
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return True
        return False


def answered_calls(messages: list[dict[str, Any]]) -> list[str]:
    """The calls of the history that a tool message answers (by tool_call_id; a tool message without one answers
    the calls of the assistant message before it), each in loop_guard.call_key's form."""
    calls: dict[str, str] = {}  # call id -> key
    last: list[str] = []  # the ids of the latest assistant message's calls
    answered: list[str] = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            last = []
            for i, call in enumerate(m["tool_calls"]):
                fn = call.get("function") or {}
                try:
                    arguments = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    continue
                call_id = call.get("id") or f"#{len(calls)}-{i}"
                calls[call_id] = call_key(fn.get("name"), arguments)
                last.append(call_id)
        elif m.get("role") == "tool":
            ids = [m["tool_call_id"]] if m.get("tool_call_id") in calls else last
            answered += [calls[i] for i in ids if calls[i] not in answered]
    return answered


def render_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier assistant tool calls back into the text form the model writes them in; tool results as they are."""
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            blocks = []
            for call in m["tool_calls"]:
                fn = call.get("function") or {}
                try:
                    arguments = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    arguments = fn.get("arguments")
                blocks.append(f"{OPEN}\n{json.dumps({'name': fn.get('name'), 'arguments': arguments})}\n{CLOSE}")
            text = text_of(m.get("content"))
            m = {"role": "assistant", "content": "\n".join(([text] if text else []) + blocks)}
        out.append(m)
    return out
