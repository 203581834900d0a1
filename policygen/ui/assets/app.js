// podwall UI: a few pages over /ui/api, drawn with plain DOM calls. Every value from the cluster goes
// in through textContent, never as HTML.
"use strict";

const tokenKey = "podwall-token";
const $ = (id) => document.getElementById(id);

function headers() {
  const t = sessionStorage.getItem(tokenKey);
  return t ? { Authorization: "Bearer " + t } : {};
}

async function api(path, opts = {}) {
  const res = await fetch("api/" + path, { ...opts, headers: { ...headers(), ...(opts.headers || {}) } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.status + " " + res.statusText);
  return body;
}

function showError(err) {
  const e = $("error");
  e.textContent = err ? String(err.message || err) : "";
  e.hidden = !err;
}

function el(tag, text, cls) {
  const n = document.createElement(tag);
  if (text !== undefined) n.textContent = String(text);
  if (cls) n.className = cls;
  return n;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

// ---- workloads ----

async function showWorkloads() {
  const ns = $("ns-filter").value;
  const data = await api("workloads" + (ns ? "?namespace=" + encodeURIComponent(ns) : ""));
  const sel = $("ns-filter");
  for (const n of data.namespaces) {
    if (![...sel.options].some((o) => o.value === n)) sel.appendChild(new Option(n, n));
  }
  const body = $("workloads").tBodies[0];
  body.replaceChildren();
  for (const w of data.workloads) {
    const link = el("a", w.workload);
    link.href = "#/policy/" + encodeURIComponent(w.namespace) + "/" + encodeURIComponent(w.policy);
    const name = el("td"); name.appendChild(link);
    const sync = el("td", w.inSync + " / " + w.sidecars, "num" + (w.inSync < w.sidecars ? " bad" : ""));
    for (const p of w.pods || []) sync.appendChild(podState(p, w.mode));
    if (w.versions && w.versions.length) sync.appendChild(versions(w));
    const viol = el("td", w.lastHour, "num" + (w.lastHour > 0 ? " bad" : ""));
    body.appendChild(row([w.namespace, name, el("td", w.mode, "mode mode-" + w.mode),
      el("td", w.rules.manifest + " / " + w.rules.learned + " / " + w.rules.user, "num"), sync, viol,
      el("td", w.proposals, "num" + (w.proposals > 0 ? " bad" : ""))]));
  }
  $("workloads-empty").hidden = data.workloads.length > 0;
}

// podState is one pod's reported state: the mode its sidecar enforces (a weaker one than the policy's
// is not in sync) and a refused config file, with why in the title.
const modeRank = { Learn: 1, Monitor: 2, Protect: 3 };

function podState(p, policyMode) {
  const weaker = (modeRank[p.mode] || 0) < (modeRank[policyMode] || 0);
  let text = p.pod + ": " + (p.mode || "?") + (weaker ? " (weaker than the policy's " + policyMode + ")" : "");
  if (p.file === "refused") text += ", config refused";
  const div = el("div", text, "pod" + (weaker || p.file === "refused" ? " bad" : ""));
  if (p.message) div.title = p.message;
  return div;
}

// versions lists a workload's sidecars by version; outdated ones (another version than policygen's)
// run until their pods are restarted.
function versions(w) {
  let text = "versions: " + w.versions.map((v) => v.version + " ×" + v.count).join(", ");
  if (w.outdated > 0) text += " (" + w.outdated + " outdated: restart the pods to upgrade)";
  return el("div", text, "versions" + (w.outdated > 0 ? " bad" : ""));
}

// ---- one policy ----

let shownPolicy = null;

async function showPolicy(ns, name) {
  const p = await api("policies/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name));
  shownPolicy = p;
  $("policy-title").textContent = p.namespace + " / " + p.workload + " (revision " + p.revision + ")";
  $("mode-select").value = p.mode;
  $("mode-select").disabled = !p.canChangeMode;
  $("mode-apply").disabled = !p.canChangeMode;
  $("mode-note").textContent = p.canChangeMode ? "" :
    "read-only: your Kubernetes permissions do not let you patch this WorkloadPolicy";
  showProposals(p);
  const groups = $("rule-groups");
  groups.replaceChildren();
  for (const g of p.groups) {
    const div = el("div", undefined, "origin");
    div.id = "rules-" + g.origin;
    div.appendChild(el("h3", g.origin + " rules (" + g.rules.length + ")"));
    const ul = el("ul");
    for (const r of g.rules) ul.appendChild(el("li", r));
    if (g.rules.length === 0) ul.appendChild(el("li", "none", "hint"));
    div.appendChild(ul);
    groups.appendChild(div);
  }
  $("dns").textContent = p.dns;
  $("netpol").textContent = p.networkPolicy;
}

function showProposals(p) {
  const list = $("proposal-list");
  list.replaceChildren();
  for (const pr of p.proposals) {
    const li = el("li", undefined, "proposal");
    li.dataset.name = pr.name;
    li.appendChild(el("span", pr.rule + " Because: " + pr.source + ". Since " + new Date(pr.since).toLocaleString() + ". "));
    const b = el("button", "Accept");
    b.disabled = !p.canChangeMode;
    b.title = p.canChangeMode ? "write this rule into the policy" : "your Kubernetes permissions do not let you patch this WorkloadPolicy";
    b.addEventListener("click", () => acceptProposal(pr.name).catch(showError));
    li.appendChild(b);
    list.appendChild(li);
  }
  if (p.pendingProposals > p.proposals.length) {
    list.appendChild(el("li", (p.pendingProposals - p.proposals.length) + " more not listed", "hint"));
  }
  $("proposals").hidden = p.pendingProposals === 0;
}

async function acceptProposal(name) {
  if (!shownPolicy) return;
  await api("policies/" + encodeURIComponent(shownPolicy.namespace) + "/" + encodeURIComponent(shownPolicy.policy) + "/accept", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ proposals: [name] }),
  });
  $("mode-note").textContent = "accepted " + name + ": policygen writes it into the policy";
  setTimeout(() => render(), 1000); // show the policy with the rule once policygen wrote it
}

async function applyMode() {
  if (!shownPolicy) return;
  const mode = $("mode-select").value;
  await api("policies/" + encodeURIComponent(shownPolicy.namespace) + "/" + encodeURIComponent(shownPolicy.policy) + "/mode", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mode }),
  });
  $("mode-note").textContent = "mode set to " + mode;
}

// ---- live verdicts ----

const live = { after: 0, ctl: null, paused: false, rows: 0, maxRows: 500 };

// peerText is a verdict's peer with the DNS name beside it: the name the pod resolved the address
// from, or the name a DNS query asked for.
function peerText(v) {
  if (!v.name) return v.peer;
  return v.peer + (v.evaluator === "dns-query" ? " (query for " + v.name + ")" : " (" + v.name + ")");
}

function addVerdict(v) {
  const body = $("verdicts").tBodies[0];
  const tr = row([new Date(v.time).toLocaleTimeString(), el("td", v.verdict, "verdict-" + v.verdict),
    v.namespace + "/" + v.pod, v.direction, peerText(v), v.protocol + " " + v.port, v.rule, el("td", v.count, "num")]);
  tr.dataset.seq = v.seq;
  body.insertBefore(tr, body.firstChild); // newest first
  if (body.rows.length > live.maxRows) body.deleteRow(-1);
}

// stream reads the server-sent events with fetch (EventSource cannot send the token), resuming after
// the last verdict shown; the server keeps what arrives while the view is paused or disconnected.
async function stream() {
  if (live.ctl || live.paused) return;
  const ctl = new AbortController();
  live.ctl = ctl;
  $("live-state").textContent = "connected";
  try {
    const res = await fetch("api/verdicts?after=" + live.after, { headers: headers(), signal: ctl.signal });
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
    if (!ctl.signal.aborted) showError(err);
  }
  if (live.ctl === ctl) live.ctl = null;
  if (!ctl.signal.aborted && route().page === "live") setTimeout(stream, 1000);
}

function handleEvent(text) {
  let event = "message", data = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (event === "lost") {
    // On a first connection the older verdicts were never shown: nothing was missed.
    if (live.after > 0) $("live-state").textContent = data + " verdicts fell out of the server's buffer while away";
  } else if (event === "message" && data) {
    const v = JSON.parse(data);
    if (v.seq <= live.after) return;
    live.after = v.seq;
    addVerdict(v);
  }
}

function stopStream() {
  if (live.ctl) live.ctl.abort();
  live.ctl = null;
}

function togglePause() {
  live.paused = !live.paused;
  $("pause").textContent = live.paused ? "Resume" : "Pause";
  if (live.paused) {
    stopStream();
    $("live-state").textContent = "paused: policygen keeps new verdicts and sends them on resume";
  } else {
    stream();
  }
}

// ---- routing ----

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return { page: parts[0] || "workloads", args: parts.slice(1) };
}

let refresh = null;

async function render() {
  const { page, args } = route();
  clearInterval(refresh);
  if (page !== "live") stopStream();
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === "nav-" + page);
  showError(null);
  try {
    if (page === "workloads") {
      await showWorkloads();
      refresh = setInterval(() => showWorkloads().catch(showError), 5000);
    } else if (page === "policy") {
      await showPolicy(args[0], args[1]);
    } else if (page === "live") {
      stream();
    } else if (page === "graph") {
      await showMap(); // map.js
    }
  } catch (err) {
    showError(err);
  }
}

function init() {
  $("token").value = "";
  $("signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem(tokenKey, t);
    $("token").value = "";
    stopStream();
    render();
  });
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(tokenKey); stopStream(); render(); });
  $("ns-filter").addEventListener("change", () => showWorkloads().catch(showError));
  $("mode-apply").addEventListener("click", () => applyMode().catch(showError));
  $("pause").addEventListener("click", togglePause);
  initMap(); // map.js
  window.addEventListener("hashchange", render);
  render();
}

init();
