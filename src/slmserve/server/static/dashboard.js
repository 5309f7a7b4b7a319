// slmserve's live dashboard: scrapes /metrics every second and charts what changed between scrapes.
const $ = (id) => document.getElementById(id);
const INTERVAL_MS = 1000;
const POINTS = 120; // two minutes of history per chart
const MIN_SPAN = 30; // a young chart spans 30 s, not two minutes, so its first points are not a sliver at the edge
const WINDOW_S = 10; // percentiles over this many seconds, so one quiet second does not blank them

/** Prometheus text format -> Map of sample name -> [{labels, value}]. */
function parseMetrics(text) {
  const samples = new Map();
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue; // comments, blank lines
    const labels = {};
    for (const [, key, value] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    if (!samples.has(m[1])) samples.set(m[1], []);
    samples.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of a metric's samples over all label sets; null when the server does not export it. */
function total(samples, name) {
  const list = samples.get(name);
  return list ? list.reduce((sum, s) => sum + s.value, 0) : null;
}

/** Cumulative bucket counts observed between two scrapes: [[le, count]] sorted by le, +Inf last. */
function bucketDeltas(older, newer, name) {
  const before = new Map((older.get(name) || []).map((s) => [s.labels.le, s.value]));
  return (newer.get(name) || [])
    .map((s) => [s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value - (before.get(s.labels.le) || 0)])
    .sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of bucketed observations, interpolated inside its bucket as Prometheus's histogram_quantile. */
function quantile(q, buckets) {
  const count = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(count > 0)) return null; // nothing observed in the window
  const rank = q * count;
  let lower = 0, below = 0;
  for (const [le, cumulative] of buckets) {
    if (cumulative >= rank) {
      if (le === Infinity) return lower; // past the last finite bound: that bound is all we know
      return lower + ((le - lower) * (rank - below)) / (cumulative - below);
    }
    [lower, below] = [le, cumulative];
  }
  return lower;
}

/** The dashboard's figures from three scrapes: the previous one (rates) and the oldest in the window (percentiles). */
function figures(previous, oldest, now) {
  const seconds = now.t - previous.t;
  const rate = (name) => {
    const [a, b] = [total(previous.samples, name), total(now.samples, name)];
    return a === null || b === null ? null : Math.max(0, b - a) / seconds; // a restarted server resets counters
  };
  const percentiles = (name) => {
    const buckets = bucketDeltas(oldest.samples, now.samples, `${name}_bucket`);
    return [0.5, 0.95].map((q) => quantile(q, buckets)).map((v) => (v === null ? null : v * 1000));
  };
  const cpu = rate("process_cpu_seconds_total");
  const memory = total(now.samples, "process_resident_memory_bytes");
  return {
    tokens: [rate("slmserve_generation_tokens_total")],
    requests: [total(now.samples, "slmserve_requests_running"), total(now.samples, "slmserve_requests_waiting")],
    ttft: percentiles("slmserve_time_to_first_token_seconds"),
    itl: percentiles("slmserve_inter_token_latency_seconds"),
    cpu: [cpu === null ? null : cpu * 100],
    memory: [memory === null ? null : memory / 2 ** 20],
  };
}

const FIELDS = {
  tokens: ["tokens_per_s"], requests: ["running", "waiting"], ttft: ["ttft_p50", "ttft_p95"],
  itl: ["itl_p50", "itl_p95"], cpu: ["cpu"], memory: ["memory"],
};
const series = Object.fromEntries(Object.entries(FIELDS).map(([chart, ids]) => [chart, ids.map(() => [])]));

function format(v) {
  if (v === null || !Number.isFinite(v)) return "–";
  return v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1);
}

function show(latest) {
  for (const [chart, ids] of Object.entries(FIELDS)) {
    ids.forEach((id, i) => {
      $(id).textContent = format(latest[chart][i]);
      series[chart][i].push(latest[chart][i]);
      if (series[chart][i].length > POINTS) series[chart][i].shift();
    });
    drawChart($(`chart-${chart}`), series[chart], Math.max(MIN_SPAN, series[chart][0].length));
  }
}

const scrapes = []; // the last WINDOW_S seconds of scrapes, oldest first

async function tick() {
  try {
    const response = await apiFetch("/metrics", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const now = { t: performance.now() / 1000, samples: parseMetrics(await response.text()) };
    const previous = scrapes[scrapes.length - 1];
    scrapes.push(now);
    while (now.t - scrapes[0].t > WINDOW_S) scrapes.shift();
    if (previous) show(figures(previous, scrapes[0], now));
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("status").textContent = `metrics unavailable (${err.message})`;
  }
  setTimeout(tick, INTERVAL_MS);
}

function showModel() {
  apiFetch("/v1/models").then((r) => r.json()).then((m) => { $("model").textContent = m.data[0].id; }).catch(() => {});
}
setUpKeyForm(showModel);
tick();
showModel();
