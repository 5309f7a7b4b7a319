// slmserve's chat page: streams /v1/chat/completions and renders the answer's markdown (marked, then DOMPurify);
// keeps the conversation, system prompt and chosen model in this browser across reloads; Stop aborts on the server.
const $ = (id) => document.getElementById(id);
const STORE = "slmserve-chat";
const history = []; // {role, content, model}: what was said, and which model or adapter said it
let controller = null;
let wantedModel = null; // the model the saved conversation used, chosen once /v1/models lists it

function render(div, role, text) {
  if (role === "assistant") div.innerHTML = DOMPurify.sanitize(marked.parse(text));
  else div.textContent = text;
}

function addMessage(role, text, model) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  if (role === "assistant") div.dataset.model = model || "Assistant";
  render(div, role, text);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  showEmpty();
  return div;
}

// A first visit (or a new chat) shows what to do instead of a blank page.
function showEmpty() {
  $("empty").hidden = $("log").children.length > 0;
}

// What the answer's bubble says until the first words come. "sending": the server has not answered yet.
// "queued": it has (a streamed answer's headers go out once the engine has taken the request), and the engine
// gives it a free slot, then reads the prompt; under load that is where the time goes.
const WAITING = {
  sending: "Waiting for the server",
  queued: "Accepted: waiting for a free slot, then reading the prompt",
};

function setState(bubble, state) {
  if (state) bubble.dataset.state = state;
  else delete bubble.dataset.state;
  bubble.classList.toggle("pending", state in WAITING);
}

// The server's load from its own gauges, as the dashboard reads them; "" where /metrics is closed to this page.
async function serverLoad() {
  try {
    const response = await fetch("/metrics", { headers: apiHeaders() });
    if (!response.ok) return "";
    const text = await response.text();
    const sum = (name) => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))]
      .reduce((total, m) => total + Number(m[1]), 0);
    return ` · server: ${sum("slmserve_requests_running")} running, ${sum("slmserve_requests_waiting")} waiting`;
  } catch (_) {
    return "";
  }
}

// Keeps the waiting bubble's status line current (state, seconds, load) every second; returns its stop.
function watchWaiting(bubble) {
  const started = performance.now();
  const status = document.createElement("div");
  status.className = "status";
  let load = "";
  const show = () => {
    if (!(bubble.dataset.state in WAITING)) return; // the answer's text has replaced the status
    const seconds = Math.floor((performance.now() - started) / 1000);
    status.textContent = `${WAITING[bubble.dataset.state]}… ${seconds} s${load}`;
    if (!status.isConnected) bubble.appendChild(status);
  };
  const timer = setInterval(() => {
    show();
    serverLoad().then((text) => { load = text; show(); });
  }, 1000);
  show();
  return { show, stop: () => clearInterval(timer) };
}

function save() {
  const state = { history, system: $("system").value, model: $("model").value || wantedModel };
  localStorage.setItem(STORE, JSON.stringify(state));
}

function restore() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (_) { /* a stale or foreign value */ }
  if (!saved) return;
  $("system").value = saved.system || "";
  wantedModel = saved.model || null;
  for (const m of saved.history || []) {
    history.push(m);
    addMessage(m.role, m.content, m.model);
  }
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
  const turns = history.map(({ role, content }) => ({ role, content }));
  return {
    model: $("model").value || undefined,
    messages: (system ? [{ role: "system", content: system }] : []).concat(turns),
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
  const model = $("model").value;
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = addMessage("assistant", "", model);
  setState(bubble, "sending");
  const waiting = watchWaiting(bubble);
  let answer = "";
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
    setState(bubble, "queued");
    waiting.show();
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
          if (!first) {
            setState(bubble, "writing");
            $("stats").textContent = "Writing…";
          }
          first = first || performance.now();
          chunks += 1;
          answer += piece;
          render(bubble, "assistant", answer);
          bubble.scrollIntoView({ block: "end" });
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") bubble.classList.add("stopped");
    else showError(err.message);
  } finally {
    waiting.stop();
    setState(bubble, null);
    setBusy(false);
    controller = null;
  }
  if (answer) history.push({ role: "assistant", content: answer, model });
  else { bubble.remove(); if (!bubble.classList.contains("stopped")) history.pop(); showEmpty(); }
  save();
  const end = performance.now();
  const n = tokens ?? chunks;
  $("stats").textContent = "";
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
$("clear").addEventListener("click", () => {
  history.length = 0;
  $("log").innerHTML = "";
  showError("");
  showEmpty();
  save();
});
for (const example of document.querySelectorAll(".example")) {
  example.addEventListener("click", () => {
    $("input").value = example.textContent;
    $("form").requestSubmit();
  });
}
$("system").addEventListener("change", save);
$("model").addEventListener("change", () => { wantedModel = $("model").value; save(); });

// The models and LoRA adapters the server lists, the default first.
function showModels() {
  apiFetch("/v1/models").then((r) => r.json()).then((list) => {
    const select = $("model");
    select.innerHTML = "";
    for (const card of list.data) {
      const option = document.createElement("option");
      option.value = card.id;
      option.textContent = card.parent ? `${card.id} (LoRA on ${card.parent})` : card.id;
      select.appendChild(option);
    }
    if (wantedModel && [...select.options].some((o) => o.value === wantedModel)) select.value = wantedModel;
  }).catch(() => {});
}
setUpKeyForm(showModels);
restore();
showEmpty();
showModels();
