"""Chat messages -> prompt text, through the model's own Jinja chat template.

For a GGUF the rendering is llama-cpp-python's Jinja2ChatFormatter, which mirrors Hugging Face's
apply_chat_template (sandboxed Jinja, trim_blocks/lstrip_blocks, loopcontrols, tojson, raise_exception); for a
Hugging Face model (torch engine) it is the tokenizer's own apply_chat_template.
"""

from __future__ import annotations

from typing import Any

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


class HFChatTemplate:
    """The same interface over a transformers tokenizer's apply_chat_template (its template, or ChatML)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        template = tokenizer.chat_template
        self.source = template if isinstance(template, str) and template else CHATML_TEMPLATE

    takes_tools = ChatTemplate.takes_tools

    def render(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            plain_messages(messages), tools=tools, chat_template=self.source, add_generation_prompt=True, tokenize=False
        )


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": text_of(m.get("content"))} for m in messages]
