"""LangChain's ChatOpenAI, unmodified, against a live slmserve: structured output and tool binding."""

from __future__ import annotations

from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field


class Capital(BaseModel):
    """A country and its capital city."""

    country: str = Field(max_length=40)
    capital: str = Field(max_length=40)


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(max_length=40, description="The city")


def chat(server, **kw) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.url}/v1",
        api_key="unused",
        model="smollm2-135m-instruct",
        temperature=0,
        max_tokens=120,
        **kw,
    )


def test_with_structured_output_returns_the_pydantic_object(server):
    answer = chat(server).with_structured_output(Capital).invoke("What is the capital of France?")
    assert isinstance(answer, Capital) and answer.country and answer.capital


def test_bind_tools_gets_tool_calls_back(server):
    model = chat(server).bind_tools([GetWeather], tool_choice="GetWeather")
    message = model.invoke("What is the weather like in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "GetWeather" and isinstance(call["args"]["city"], str) and call["id"].startswith("call_")
    streamed = None
    for chunk in model.stream("What is the weather like in Paris?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [(call["name"], call["args"])]
