"""A chat answer as a response's output items, status and usage."""

from __future__ import annotations

from slmserve.server.protocol import openai as oa
from slmserve.server.responses.protocol import (
    FunctionCall,
    IncompleteDetails,
    OutputMessage,
    OutputText,
    Response,
    ResponseUsage,
)


def finish(response: Response, completion: oa.ChatCompletion) -> None:
    """Fill the response from the chat answer: its output items, status and usage."""
    choice = completion.choices[0]
    incomplete = choice.finish_reason == "length"
    status = "incomplete" if incomplete else "completed"
    output: list[OutputMessage | FunctionCall] = []
    calls = choice.message.tool_calls or []
    if choice.message.content or not calls:
        output.append(OutputMessage(status=status, content=[OutputText(text=choice.message.content or "")]))
    for call in calls:
        output.append(FunctionCall(call_id=call.id, name=call.function.name, arguments=call.function.arguments))
    response.output = output
    settle(response, status, usage(completion.usage), choice.closed_at_budget)


def settle(response: Response, status: str, used: ResponseUsage | None, closed: bool) -> None:
    response.status = status
    response.incomplete_details = IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None
    response.usage = used
    response.closed_at_budget = closed


def usage(u: oa.Usage | None) -> ResponseUsage | None:
    if u is None:
        return None
    return ResponseUsage(input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens)
