"""Chat messages -> prompt text, through the model's own Jinja chat template.

For a GGUF the rendering is llama-cpp-python's Jinja2ChatFormatter, which mirrors Hugging Face's
apply_chat_template (sandboxed Jinja, trim_blocks/lstrip_blocks, loopcontrols, tojson, raise_exception); for a
Hugging Face model (torch engine) it is the tokenizer's own apply_chat_template.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from slmserve.models.special_text import Part, SpecialTextError

# Used only for a GGUF that carries no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def text_of(content: Any) -> str:
    """OpenAI content may be a string or a list of parts; text parts are joined."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


class ChatTemplate:
    def __init__(self, template: str | None, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.source = template or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(self.source, eos_token=eos_token, bos_token=bos_token)

    @property
    def takes_tools(self) -> bool:
        """True when the template renders a `tools` list itself."""
        return "tools" in self.source

    def render(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> str:
        """The prompt for these messages, ending with the assistant's turn opened."""
        return self._formatter(messages=plain_messages(messages), tools=tools).prompt

    def render_parts(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> list[Part] | None:
        """The prompt as parts: the template's own text (special-token text in it is special) and the messages'
        contents (not special). Each content is rendered between two markers of this call's own, its leading and
        trailing whitespace outside them so a template that trims still trims. None when the template changes a
        content beyond that (cuts or splits it), so the rendering with markers is not the rendering without."""
        plain = self.render(messages, tools)
        tag = secrets.token_hex(8)
        start, end = f"\ue000{tag}\ue001", f"\ue002{tag}\ue003"
        marked = [{**m, "content": _between(text_of(m.get("content")), start, end)} for m in messages]
        parts, inside = [], False
        for piece in re.split(f"({start}|{end})", self.render(marked, tools)):
            if piece in (start, end):
                if inside == (piece == start):
                    return None
                inside = not inside
            elif piece:
                parts.append((piece, not inside))
        return None if inside or "".join(t for t, _ in parts) != plain else parts


class HFChatTemplate:
    """The same interface over a transformers tokenizer's apply_chat_template (its template, or ChatML)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        template = tokenizer.chat_template
        self.source = template if isinstance(template, str) and template else CHATML_TEMPLATE

    takes_tools = ChatTemplate.takes_tools
    render_parts = ChatTemplate.render_parts

    def render(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            plain_messages(messages), tools=tools, chat_template=self.source, add_generation_prompt=True, tokenize=False
        )


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": text_of(m.get("content"))} for m in messages]


def _between(text: str, start: str, end: str) -> str:
    core = text.strip()
    if not core:
        return text
    head = text[: len(text) - len(text.lstrip())]
    return f"{head}{start}{core}{end}{text[len(head) + len(core) :]}"


def chat_prompt_ids(
    template, tokenizer, messages: list[dict[str, Any]], tools: list[dict] | None = None, add_special: bool = False
) -> list[int]:
    """A chat prompt's token ids, where special-token text in the messages is plain text: a user who writes
    `<|im_start|>system` gets those characters, not a system turn. The template writes any BOS itself, as Hugging
    Face's apply_chat_template does (add_special adds the tokenizer's own as well). Raises SpecialTextError where
    the text cannot be kept plain: in tools a template renders itself, or in a template that changes contents."""
    if tools and tokenizer.holds_special(json.dumps(tools, ensure_ascii=False)):
        raise SpecialTextError("a tool definition holds special-token text")
    parts = template.render_parts(messages, tools)
    if parts is None:
        if any(tokenizer.holds_special(text_of(m.get("content"))) for m in messages):
            raise SpecialTextError("a message holds special-token text, which this chat template cannot keep plain")
        parts = [(template.render(messages, tools), True)]
    return tokenizer.encode_parts(parts, add_special)
