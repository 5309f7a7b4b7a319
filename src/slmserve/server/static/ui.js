// slmserve's chat page: streams /v1/chat/completions, keeps the conversation, Stop aborts on the server.
const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function errorText(response) {
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    message = (body.error && body.error.message) || body.detail || message;
  } catch (_) { /* not JSON */ }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    return `The server is busy${wait ? `; try again in ${wait} s` : ""}. (${message})`;
  }
  return message;
}

function requestBody() {
  const number = (id) => Number($(id).value);
  const system = $("system").value.trim();
  return {
    messages: (system ? [{ role: "system", content: system }] : []).concat(history),
    stream: true,
    stream_options: { include_usage: true },
    temperature: number("temperature"),
    top_p: number("top_p"),
    top_k: number("top_k"),
    max_tokens: number("max_tokens"),
  };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  showError("");
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "");
  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let first = null, chunks = 0, tokens = null;
  try {
    const response = await apiFetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const data = JSON.parse(line.slice(6));
        if (data.error) throw new Error(data.error.message);
        if (data.usage) tokens = data.usage.completion_tokens;
        const piece = data.choices && data.choices[0] && data.choices[0].delta.content;
        if (piece) {
          first = first || performance.now();
          chunks += 1;
          bubble.textContent += piece;
          bubble.scrollIntoView({ block: "end" });
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") bubble.classList.add("stopped");
    else showError(err.message);
  } finally {
    setBusy(false);
    controller = null;
  }
  if (bubble.textContent) history.push({ role: "assistant", content: bubble.textContent });
  else { bubble.remove(); if (!bubble.classList.contains("stopped")) history.pop(); }
  const end = performance.now();
  const n = tokens ?? chunks;
  if (first && n > 1) {
    const rate = (n - 1) / ((end - first) / 1000);
    $("stats").textContent = `${n} tokens · first after ${Math.round(first - started)} ms · ${rate.toFixed(1)} tok/s`;
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history.length = 0; $("log").innerHTML = ""; showError(""); });
function showModel() {
  apiFetch("/v1/models").then((r) => r.json()).then((m) => { $("model").textContent = m.data[0].id; }).catch(() => {});
}
setUpKeyForm(showModel);
showModel();
