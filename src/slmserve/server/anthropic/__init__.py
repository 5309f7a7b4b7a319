"""Anthropic's Messages API: /v1/messages and count_tokens, onto the same serving as chat completions."""
