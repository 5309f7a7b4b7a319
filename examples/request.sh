#!/usr/bin/env bash
# Seed 001's request script: send one user message to /chat/completions and print the answer formatted.
#   ./examples/request.sh "Hello, how are you?"        (SLMSERVE_URL overrides http://127.0.0.1:8000)
set -euo pipefail
content="${1:?usage: $0 \"your message\"}"
url="${SLMSERVE_URL:-http://127.0.0.1:8000}"
body=$(python3 -c 'import json,sys; print(json.dumps({"messages": [{"role": "user", "content": sys.argv[1]}], "max_tokens": 128}))' "$content")
curl -sS --fail-with-body -X POST "$url/chat/completions" -H "Content-Type: application/json" -d "$body" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps([c["message"] for c in r["choices"]], indent=3, ensure_ascii=False))'
