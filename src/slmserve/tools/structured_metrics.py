"""What scripts/structured_eval.py measures of each answer (issue 31): valid, closed before the budget, repeated
list items, repeated tool calls. Pure functions of the task and the server's answer; no I/O.

Repeated items are list items equal to an earlier item of the same list, over every list anywhere in the answer. An
answer that does not parse (cut off at max_tokens, say) is read by a tolerant parser that keeps each list's
complete items, so `["Rome", "Rome", "Ro` counts two items, one repeated.
"""

from __future__ import annotations

import contextlib
import json
import re
from functools import lru_cache
from typing import Any

TOOL_CALL = "<tool_call>"  # how the server's tool grammar begins a call (server/tools.py)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_OPENER = re.compile(r"[{\[]")


class _End(Exception):
    """The text ended (or stopped being JSON) inside a value."""


class _Lenient:
    """A JSON reader that never fails: it records every list it opens, with the items it read whole."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.lists = text, 0, []

    def _skip(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1
        if self.pos >= len(self.text):
            raise _End
        return self.text[self.pos]

    def value(self) -> Any:
        c = self._skip()
        if c in "{[":
            return self._container(c)
        if c == '"':
            try:
                s, self.pos = json.decoder.scanstring(self.text, self.pos + 1)
            except json.JSONDecodeError as exc:
                raise _End from exc
            return s
        for word, value in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return value
        m = _NUMBER.match(self.text, self.pos)
        if not m or m.end() == len(self.text):  # a number at the very end may have been cut short
            raise _End
        self.pos = m.end()
        return json.loads(m.group())

    def _container(self, opener: str) -> Any:
        closer, out = ("]", []) if opener == "[" else ("}", {})
        if opener == "[":
            self.lists.append(out)  # recorded now, so a list cut off keeps the items it has
        self.pos += 1
        if self._skip() == closer:
            self.pos += 1
            return out
        while True:
            if opener == "[":
                out.append(self.value())
            else:
                key = self.value()
                if not isinstance(key, str) or self._skip() != ":":
                    raise _End
                self.pos += 1
                out[key] = self.value()
            c = self._skip()
            self.pos += 1
            if c == closer:
                return out
            if c != ",":
                raise _End


def lenient_lists(text: str) -> list[list]:
    """Every list in text (JSON, maybe cut off, maybe several values amid other text), with its complete items."""
    lists, start = [], 0
    while (m := _OPENER.search(text, start)) is not None:
        reader = _Lenient(text)
        reader.pos = m.start()
        try:
            reader.value()
            start = reader.pos
        except _End:
            start = len(text)
        lists += reader.lists
    return lists


def lists_in(value: Any) -> list[list]:
    """Every list in a parsed JSON value, nested ones included."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in lists_in(v)]
    if isinstance(value, list):
        return [value] + [x for v in value for x in lists_in(v)]
    return []


def count_repeats(lists: list[list]) -> tuple[int, int]:
    """(items equal to an earlier item of their list, all items)."""
    repeated = items = 0
    for items_ in lists:
        seen = set()
        for item in items_:
            key = json.dumps(item, sort_keys=True)
            repeated += key in seen
            seen.add(key)
        items += len(items_)
    return repeated, items


@lru_cache(maxsize=256)
def _validator(schema_text: str):
    try:
        import jsonschema
    except ImportError as exc:  # a dependency of the test extra (schemathesis), not of the server
        raise RuntimeError("the structured eval validates with jsonschema: pip install jsonschema") from exc
    schema = json.loads(schema_text)
    return jsonschema.validators.validator_for(schema)(schema)


def schema_errors(value: Any, schema: dict) -> str | None:
    """None when value is valid against schema, else the first error's message."""
    error = next(iter(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value)), None)
    return None if error is None else error.message


def _tool_schemas(task: dict) -> dict[str, dict]:
    empty = {"type": "object", "properties": {}, "additionalProperties": False}
    return {t["function"]["name"]: t["function"].get("parameters") or empty for t in task["tools"]}


def check(task: dict, message: dict) -> tuple[bool, str, list]:
    """(valid, why not, the parsed values: the answer or each call's arguments) for one answer's message."""
    content, calls = message.get("content"), message.get("tool_calls") or []
    if task["kind"] != "tools":
        try:
            value = json.loads(content or "")
        except ValueError:
            return False, "not JSON", []
        if task["kind"] == "json_object":
            return isinstance(value, dict), "" if isinstance(value, dict) else "not an object", [value]
        why = schema_errors(value, task["schema"])
        return why is None, why or "", [value]
    if not calls:
        text_allowed = task.get("tool_choice") in (None, "auto", "none")
        if not (content or "").strip():
            return False, "empty answer", []
        if TOOL_CALL in content:  # text that begins a call, or repeats the tag ("You can call <tool_call><tool_")
            return False, "an unfinished or malformed tool call", []
        return text_allowed, "" if text_allowed else "text where a call is required", []
    schemas, values = _tool_schemas(task), []
    for call in calls:
        fn = call.get("function") or {}
        if fn.get("name") not in schemas:
            return False, f"call to an unknown tool {fn.get('name')!r}", values
        try:
            args = json.loads(fn.get("arguments") or "")
        except ValueError:
            return False, "arguments not JSON", values
        values.append(args)
        if why := schema_errors(args, schemas[fn["name"]]):
            return False, f"{fn['name']}: {why}", values
    return True, "", values


def repeated_calls(history: list[dict], calls: list[dict]) -> int:
    """Calls identical in name and arguments to one in the history or earlier in the same answer."""

    def key(call: dict) -> str:
        fn = call.get("function", call)
        args = fn.get("arguments")
        with contextlib.suppress(ValueError):
            args = json.loads(args) if isinstance(args, str) else args
        return json.dumps([fn.get("name"), args], sort_keys=True)

    seen, repeats = {key(c) for c in history}, 0
    for call in calls:
        repeats += key(call) in seen
        seen.add(key(call))
    return repeats


def score(task: dict, history_calls: list[dict], status: int, body: dict, max_tokens: int | None = None) -> dict:
    """One request's measures from the HTTP status and the JSON body of /v1/chat/completions; over_budget: more
    completion tokens than max_tokens (a budget close must fit in the budget)."""
    if status != 200:
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        return {"status": status, "valid": False, "closed": False, "why": str(message)[:300]}
    choice = body["choices"][0]
    message, finish = choice["message"], choice.get("finish_reason")
    valid, why, values = check(task, message)
    calls = message.get("tool_calls") or []
    text = (message.get("content") or "").lstrip()
    if values:
        lists, source = [x for v in values for x in lists_in(v)], "parsed"
    elif text[:1] in ("{", "[", "<"):
        lists, source = lenient_lists(text), "lenient"
    else:
        lists, source = [], "none"
    repeated, items = count_repeats(lists)
    budget, tokens = bool(choice.get("closed_at_budget")), (body.get("usage") or {}).get("completion_tokens", 0)
    return {
        "status": status, "valid": valid, "why": why, "finish_reason": finish, "closed_at_budget": budget,
        "closed": finish in ("stop", "tool_calls") and not budget,
        "tokens": tokens, "over_budget": max_tokens is not None and tokens > max_tokens,
        "list_items": items, "repeated_items": repeated, "repeats_from": source,
        "calls": len(calls), "repeated_calls": repeated_calls(history_calls, calls),
        "content": message.get("content"), "tool_calls": [c.get("function") for c in calls] or None,
    }  # fmt: skip


def summarize(records: list[dict]) -> dict:
    """The measures of a group of scored requests: percentages of n, repeated items as a share of all items."""
    n = len(records)
    if not n:
        return {"n": 0}
    ok = [r for r in records if r["status"] == 200]
    items, repeated = sum(r["list_items"] for r in ok), sum(r["repeated_items"] for r in ok)

    def pct(key: str) -> float:
        return round(100 * sum(bool(r.get(key)) for r in records) / n, 1)

    return {
        "n": n, "errors": n - len(ok), "valid_pct": pct("valid"), "closed_pct": pct("closed"),
        "closed_at_budget_pct": pct("closed_at_budget"), "over_budget_pct": pct("over_budget"),
        "list_items": items, "repeated_items": repeated,
        "repeated_pct": round(100 * repeated / items, 2) if items else 0.0,
        "calls": sum(r["calls"] for r in ok), "repeated_calls": sum(r["repeated_calls"] for r in ok),
        "mean_tokens": round(sum(r["tokens"] for r in ok) / len(ok), 1) if ok else 0.0,
        "list_items_per_answer": round(items / len(ok), 1) if ok else 0.0,  # valid but empty lists show here
    }  # fmt: skip


def targets(summary: dict, max_tokens: int) -> list[dict]:
    """The issue's targets, met or not, per layout and arm: at max_tokens, 100% valid, >= 95% closed before the
    budget, < 1% repeated items; speed >= 0.9x unconstrained; 100% valid at small budgets."""
    checks = []
    for row in (r for r in summary["quality"] if r["task"] == "ALL" and r["max_tokens"] == max_tokens):
        key = {"layout": row["layout"], "arm": row["arm"], "temperature": row["temperature"]}
        for what, field, met in (
            ("valid %", "valid_pct", lambda v: v == 100),
            ("closed before the budget %", "closed_pct", lambda v: v >= 95),
            ("repeated items %", "repeated_pct", lambda v: v < 1),
        ):
            checks.append(key | {"what": what, "value": row[field], "met": met(row[field])})
    for row in summary["speed"]:
        key = {"layout": row["layout"], "arm": row["arm"], "concurrency": row["concurrency"]}
        checks.append(key | {"what": "speed x unconstrained", "value": row["ratio"], "met": row["ratio"] >= 0.9})
    for layout, arm in dict.fromkeys((r["layout"], r["arm"]) for r in summary["small_budgets"]):
        valid = min(r["valid_pct"] for r in summary["small_budgets"] if (r["layout"], r["arm"]) == (layout, arm))
        key = {"layout": layout, "arm": arm, "what": "valid % at small budgets"}
        checks.append(key | {"value": valid, "met": valid == 100})
    return checks
