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

// policyHref is the address of a policy's page.
function policyHref(ns, name) {
  return "#/policy/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name);
}

// setChoices fills a select with its "all" option (its data-all text, else "all") and values, sorted
// and each once, and selects selected.
function setChoices(sel, values, selected) {
  const opts = [new Option(sel.dataset.all || "all", "")];
  for (const v of [...new Set(values)].filter(Boolean).sort()) opts.push(new Option(v, v));
  sel.replaceChildren(...opts);
  sel.value = selected;
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
    link.href = policyHref(w.namespace, w.policy);
    const name = el("td"); name.appendChild(link);
    const sync = el("td", w.inSync + " / " + w.sidecars, "num" + (w.inSync < w.sidecars ? " bad" : ""));
    for (const p of w.pods || []) sync.appendChild(podState(p, w.mode));
    if (w.versions && w.versions.length) sync.appendChild(versions(w));
    if (w.weakened > 0) {
      sync.appendChild(el("div", w.weakened + " weakened: failing open, in a weaker mode, or its ruleset changed by another process in the pod", "weakened bad"));
    }
    const viol = el("td", w.lastHour, "num" + (w.lastHour > 0 ? " bad" : ""));
    body.appendChild(row([w.namespace, name, el("td", w.mode, "mode mode-" + w.mode),
      el("td", w.rules.manifest + " / " + w.rules.learned + " / " + w.rules.user, "num"), sync, viol,
      el("td", w.proposals, "num" + (w.proposals > 0 ? " bad" : ""))]));
  }
  $("workloads-empty").hidden = data.workloads.length > 0;
  showUnreachable($("workloads-replicas"), data.unreachable);
}

// showUnreachable says in p which policygen replicas did not answer, so that their share of the
// counts is known to be missing, and hides p when all did.
function showUnreachable(p, unreachable) {
  p.textContent = (unreachable || []).map((u) => "policygen " + u.replica + " does not answer, its share is missing: " + u.error).join("; ");
  p.hidden = !p.textContent;
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
  showEvidence(p);
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

// showEvidence shows what promotion to the next mode goes on: the window's coverage, what Protect
// would deny, and what an automatic promotion waits for.
function showEvidence(p) {
  $("coverage").textContent = coverageInWords(p.coverage);
  $("promotion-blocked").textContent = "Automatic promotion waits: " + p.promotionBlocked + ".";
  $("promotion-blocked").hidden = !p.promotionBlocked;
  $("would-deny-note").textContent = wouldDenyInWords(p.wouldDenyFlows, p.mode) +
    (p.wouldDenyFlows > p.wouldDeny.length ? " The " + p.wouldDeny.length + " most recent:" : "");
  $("would-deny-note").className = p.wouldDenyFlows > 0 ? "bad" : "";
  const body = $("would-deny").tBodies[0];
  body.replaceChildren(...p.wouldDeny.map((f) => row([f.direction,
    f.peer.startsWith("cidr:") || !f.address ? f.peer : f.peer + " (" + f.address + ")",
    f.protocol + (f.port ? " " + f.port : ""), el("td", f.count, "num"), new Date(f.lastSeen).toLocaleString()])));
  $("would-deny").hidden = p.wouldDeny.length === 0;
}

// coverageInWords says how much of the workload the current window observed.
function coverageInWords(c) {
  if (!c) return "Coverage: not measured yet.";
  return "Coverage since " + new Date(c.since).toLocaleString() + ": " + c.reported + " of " + c.pods + " pods reported, " +
    c.observedHours + " hours observed" + (c.gapHours ? ", " + c.gapHours + " with a pod unobserved" : "") + ", " +
    c.flows + " connections; " + (c.complete ? "complete." : "incomplete.");
}

// wouldDenyInWords counts the flows of the window that Protect would refuse (in Protect: refused).
function wouldDenyInWords(n, mode) {
  const flows = n ? n + (n === 1 ? " flow" : " flows") + " of this window." : "no flow of this window.";
  return (mode === "Protect" ? "Protect denied " : "Protect would deny ") + flows;
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

// ---- routing ----

// route reads the address: #/page/arg/...?query. #/live, the Flows page's first name, still leads there.
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const q = hash.indexOf("?");
  const parts = (q < 0 ? hash : hash.slice(0, q)).split("/").map(decodeURIComponent);
  const page = parts[0] === "live" ? "flows" : parts[0] || "workloads";
  return { page, args: parts.slice(1), params: new URLSearchParams(q < 0 ? "" : hash.slice(q + 1)) };
}

let refresh = null;

async function render() {
  const { page, args, params } = route();
  clearInterval(refresh);
  if (page !== "flows") stopStream();
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) {
    const here = a.id === "nav-" + (page === "policy" ? "workloads" : page);
    a.classList.toggle("active", here);
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const section = document.querySelector("#page-" + page + " h2");
  document.title = (section && page !== "policy" ? section.textContent + " · " : "") + "podwall";
  showError(null);
  try {
    if (page === "workloads") {
      await showWorkloads();
      refresh = setInterval(() => showWorkloads().catch(showError), 5000);
    } else if (page === "policy") {
      await showPolicy(args[0], args[1]);
    } else if (page === "flows") {
      showFlows(params);
    } else if (page === "graph") {
      await showMap(); // map.js
    }
  } catch (err) {
    showError(err);
  }
}

// shortcuts: g then w, f or m goes to Workloads, Flows or the map, unless typing in a field.
let gPressed = 0;

function shortcuts(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.closest("input, select, textarea")) return;
  const pages = { w: "#/workloads", f: "#/flows", m: "#/graph" };
  if (ev.key === "g") {
    gPressed = Date.now();
  } else if (pages[ev.key] && Date.now() - gPressed < 1500) {
    gPressed = 0;
    location.hash = pages[ev.key];
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
  $("skip").addEventListener("click", (ev) => { ev.preventDefault(); $("main").focus(); });
  document.addEventListener("keydown", shortcuts);
  initFlows();
  initMap(); // map.js
  window.addEventListener("hashchange", render);
  render();
}

init();
