"""OpenAI's Responses API: /v1/responses, onto the same serving as chat completions, with stored responses."""
