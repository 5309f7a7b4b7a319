"""Chat messages -> prompt text, through the model's own Jinja chat template.

The rendering is llama-cpp-python's Jinja2ChatFormatter, which mirrors Hugging Face's apply_chat_template
(sandboxed Jinja, trim_blocks/lstrip_blocks, loopcontrols, tojson, raise_exception).
"""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

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
        self.source = template or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(self.source, eos_token=eos_token, bos_token=bos_token)

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for these messages, ending with the assistant's turn opened."""
        plain = [{**m, "content": text_of(m.get("content"))} for m in messages]
        return self._formatter(messages=plain).prompt
