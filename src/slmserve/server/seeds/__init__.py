"""The five seed designs' APIs, thin translations onto the shared serving core: the model host and gateway's
/infer and /chat (chat.py), the validated /generate with its content filter and /info (generate.py), the model
lifecycle API /slm/* with its current LoRA adapter (slm.py); their request shapes (protocol.py) and serving
(serving.py). Seed 001's /chat/completions is the OpenAI route (routes/openai.py)."""
