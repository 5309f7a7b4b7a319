"""ASGI middleware, one concern a file, outermost first as app.py adds them: the request's record (id, deadline,
access log), the replica header, the drain gate, API keys and rate limits, the body size, cancellation on
disconnect."""
