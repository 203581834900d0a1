// podwall UI, the Flows page: the denies and audits sidecars report, streamed from policygen's ring,
// narrowed by filters policygen applies (the query parameters of api/verdicts, mirrored in the
// address after #/flows? so that a view can be shared), each line expandable to the event as received
// and the lines shown exportable as JSON lines. Uses app.js's helpers; loaded before it.
"use strict";

const flowFilters = ["namespace", "workload", "verdict", "peer", "port", "q"];

// flows.events are the lines shown, oldest first, each {v, raw}: the parsed event and its JSON text
// as received, which is what a line expands to and what the export writes.
const flows = { after: "", ctl: null, paused: false, query: null, events: [], maxRows: 1000, workloads: null };

// peerText is a verdict's peer with the DNS name beside it: the name the pod resolved the address
// from, or the name a DNS query asked for.
function peerText(v) {
  if (!v.name) return v.peer;
  return v.peer + (v.evaluator === "dns-query" ? " (query for " + v.name + ")" : " (" + v.name + ")");
}

// showFlows shows the page with the filters params name (from the address), restarting the stream
// when they differ from the ones it runs with.
function showFlows(params) {
  for (const k of flowFilters) $("f-" + k).value = params.get(k) || "";
  fillWorkloadChoices(params);
  const query = filterQuery();
  if (query !== flows.query) restartFlows(query);
  else flowStream();
  api("workloads").then((data) => {
    flows.workloads = data.workloads;
    fillWorkloadChoices(new URLSearchParams(filterQuery()));
  }).catch(showError);
}

// fillWorkloadChoices offers the namespaces and workloads that have policies (as last fetched);
// a value params name stays selectable even when no policy has it (any more).
function fillWorkloadChoices(params) {
  const all = flows.workloads || [];
  const ns = params.get("namespace") || "";
  const names = new Set(all.map((w) => w.namespace));
  const kinds = new Set(all.filter((w) => !ns || w.namespace === ns).map((w) => w.workload));
  setChoices($("f-namespace"), [...names, ns], ns);
  setChoices($("f-workload"), [...kinds, params.get("workload") || ""], params.get("workload") || "");
}

// filterQuery is the filters set, as a query string.
function filterQuery() {
  const q = new URLSearchParams();
  for (const k of flowFilters) {
    const v = $("f-" + k).value.trim();
    if (v) q.set(k, v);
  }
  return q.toString();
}

// filtersChanged puts the filters into the address (without a new history entry or a re-render) and
// restarts the stream with them; it resumes a paused view, since new filters ask for a new view.
function filtersChanged() {
  const query = filterQuery();
  history.replaceState(null, "", "#/flows" + (query ? "?" + query : ""));
  if (query === flows.query && !flows.paused) return;
  if (flows.paused) setPaused(false);
  restartFlows(query);
}

function restartFlows(query) {
  stopStream();
  flows.query = query;
  flows.after = "";
  flows.events = [];
  $("verdicts").tBodies[0].replaceChildren();
  $("flows-empty").hidden = false;
  flowStream();
}

// lineKey names a verdict's line: its replica's name and its number there (numbers are per replica).
const lineKey = (v) => v.replica + "-" + v.seq;

function addVerdict(v, raw) {
  flows.events.push({ v, raw });
  const body = $("verdicts").tBodies[0];
  const tr = row([new Date(v.time).toLocaleTimeString(), el("td", v.verdict, "verdict verdict-" + v.verdict),
    v.namespace + "/" + v.pod, v.direction, peerText(v), v.protocol + " " + v.port, v.rule, el("td", v.count, "num")]);
  tr.dataset.key = lineKey(v);
  tr.className = "flow";
  // The newest line is the Tab stop, unless the keyboard or a click is on another.
  const stop = body.querySelector('tr.flow[tabindex="0"]');
  const keep = stop && (stop === document.activeElement || stop.dataset.picked);
  if (stop && !keep) stop.tabIndex = -1;
  tr.tabIndex = keep ? -1 : 0;
  tr.setAttribute("aria-expanded", "false");
  tr.title = v.namespace + "/" + v.workload;
  body.insertBefore(tr, body.firstChild); // newest first
  if (flows.events.length > flows.maxRows) {
    const gone = flows.events.shift();
    const last = body.querySelector(`tr.flow[data-key="${CSS.escape(lineKey(gone.v))}"]`);
    if (last) {
      collapse(last);
      last.remove();
      if (last.tabIndex === 0) body.querySelector("tr.flow").tabIndex = 0;
    }
    $("live-state").textContent = "showing the newest " + flows.maxRows + " lines: narrow the filters to see older ones";
  }
  $("flows-empty").hidden = true;
}

// focusFlow moves the one Tab stop among the lines to tr, so that Tab passes the table in one step
// and the arrow keys move within it.
function focusFlow(tr) {
  for (const r of $("verdicts").querySelectorAll('tr.flow[tabindex="0"]')) {
    r.tabIndex = -1;
    delete r.dataset.picked;
  }
  tr.tabIndex = 0;
  tr.dataset.picked = "true";
  tr.focus();
}

// toggleFlow expands a line into the event as policygen sent it, or folds it back. The detail row is
// there only while expanded, so the table's rows are the lines.
function toggleFlow(tr) {
  if (tr.getAttribute("aria-expanded") === "true") {
    collapse(tr);
    return;
  }
  const key = tr.dataset.key;
  const e = flows.events.find((x) => lineKey(x.v) === key);
  if (!e) return;
  const td = el("td");
  td.colSpan = tr.cells.length;
  td.appendChild(el("pre", JSON.stringify(JSON.parse(e.raw), null, 2), "json"));
  const detail = el("tr", undefined, "detail");
  detail.id = "flow-json-" + key;
  detail.appendChild(td);
  tr.after(detail);
  tr.setAttribute("aria-expanded", "true");
  tr.setAttribute("aria-controls", detail.id);
}

function collapse(tr) {
  const d = $("flow-json-" + tr.dataset.key);
  if (d) d.remove();
  tr.setAttribute("aria-expanded", "false");
  tr.removeAttribute("aria-controls");
}

// flowKeys: Enter or Space expands a line; the arrow keys move between lines (Tab leaves the table).
function flowKeys(ev) {
  const tr = ev.target.closest("tr.flow");
  if (!tr) return;
  if (ev.key === "Enter" || ev.key === " ") {
    ev.preventDefault();
    toggleFlow(tr);
  } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    const rows = [...$("verdicts").querySelectorAll("tr.flow")];
    const next = rows[rows.indexOf(tr) + (ev.key === "ArrowDown" ? 1 : -1)];
    if (next) {
      ev.preventDefault();
      focusFlow(next);
    }
  }
}

// exportFlows downloads the lines shown, oldest first, one JSON object a line as received. The page
// builds the file: it holds exactly these lines, and a plain download link could not carry the token.
function exportFlows() {
  const text = flows.events.map((e) => e.raw + "\n").join("");
  const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
  const a = el("a");
  a.href = url;
  a.download = "podwall-flows-" + new Date().toISOString().replace(/[:.]/g, "-") + ".jsonl";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// flowStream reads the server-sent events of every policygen replica (api/cluster/verdicts) with fetch
// (EventSource cannot send the token), resuming after the last verdict shown: flows.after is the
// stream's last id, the last verdict seen of each replica. The replicas keep what arrives while the
// view is paused or disconnected.
async function flowStream() {
  if (flows.ctl || flows.paused) return;
  const ctl = new AbortController();
  flows.ctl = ctl;
  $("live-state").textContent = "connected";
  try {
    const res = await fetch("api/cluster/verdicts?after=" + encodeURIComponent(flows.after) + (flows.query ? "&" + flows.query : ""),
      { headers: headers(), signal: ctl.signal });
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        handleEvent(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
  } catch (err) {
    if (!ctl.signal.aborted) {
      showError(err);
      $("live-state").textContent = "disconnected";
    }
  }
  if (flows.ctl === ctl) flows.ctl = null;
  if (!ctl.signal.aborted && route().page === "flows") setTimeout(flowStream, 1000);
}

function handleEvent(text) {
  let event = "message", data = "", id = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
    else if (line.startsWith("id: ")) id = line.slice(4);
  }
  if (event === "lost") {
    // On a first connection the older verdicts were never shown: nothing was missed.
    const l = JSON.parse(data);
    if (flows.after !== "") $("live-state").textContent = l.lost + " verdicts fell out of policygen " + l.replica + "'s buffer while away";
  } else if (event === "unreachable") {
    const u = JSON.parse(data);
    $("live-state").textContent = "policygen " + u.replica + " does not answer, its verdicts are missing: " + u.error;
  } else if (event === "message" && data) {
    if (id) flows.after = id;
    addVerdict(JSON.parse(data), data);
  }
}

function stopStream() {
  if (flows.ctl) flows.ctl.abort();
  flows.ctl = null;
}

function setPaused(paused) {
  flows.paused = paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("pause").setAttribute("aria-pressed", String(paused));
}

function togglePause() {
  setPaused(!flows.paused);
  if (flows.paused) {
    stopStream();
    $("live-state").textContent = "paused: policygen keeps new verdicts and sends them on resume";
  } else {
    flowStream();
  }
}

function initFlows() {
  let typing = null;
  const form = $("flow-filters");
  form.addEventListener("submit", (ev) => ev.preventDefault());
  form.addEventListener("change", filtersChanged);
  form.addEventListener("input", (ev) => {
    if (ev.target.tagName !== "INPUT") return;
    clearTimeout(typing);
    typing = setTimeout(filtersChanged, 300);
  });
  form.addEventListener("reset", () => setTimeout(filtersChanged)); // after the form cleared its fields
  $("f-namespace").addEventListener("change", () => fillWorkloadChoices(new URLSearchParams(filterQuery())));
  $("pause").addEventListener("click", togglePause);
  $("export").addEventListener("click", exportFlows);
  const body = $("verdicts").tBodies[0];
  body.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr.flow");
    if (tr && !window.getSelection().toString()) {
      focusFlow(tr);
      toggleFlow(tr);
    }
  });
  body.addEventListener("keydown", flowKeys);
}
