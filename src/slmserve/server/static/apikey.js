// The API key, for a server started with --api-keys: asked for when the server answers 401, kept in this
// browser (localStorage) and sent as a Bearer token. Shared by the chat page and the dashboard.
const API_KEY_ITEM = "slmserve-api-key";

function apiHeaders(extra = {}) {
  const key = localStorage.getItem(API_KEY_ITEM);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// fetch with the key; on a 401 the key form shows, and the caller gets the response to report.
async function apiFetch(url, options = {}) {
  const response = await fetch(url, { ...options, headers: apiHeaders(options.headers) });
  if (response.status === 401) askForKey(localStorage.getItem(API_KEY_ITEM) ? "That key was refused." : "");
  return response;
}

function askForKey(note) {
  const form = document.getElementById("key-form");
  document.getElementById("key-note").textContent = note ? `${note} ` : "";
  form.hidden = false;
  document.getElementById("api-key").focus();
}

function setUpKeyForm(onSaved) {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = document.getElementById("api-key").value.trim();
    if (key) localStorage.setItem(API_KEY_ITEM, key);
    else localStorage.removeItem(API_KEY_ITEM);
    document.getElementById("api-key").value = "";
    form.hidden = true;
    onSaved();
  });
}
