// podwall UI: the service map. cytoscape (bundled by `make ui-assets`) draws workloads grouped by
// namespace and outside peers grouped by DNS name or CIDR, laid out by fCoSE; edges are one per pair
// and verdict, coloured by it. Labels that would overlap are moved along their edge or left for the
// details panel, so that every label drawn can be read. Values go in as cytoscape data or textContent.
"use strict";

const mapState = { data: null, cy: null };

const verdictWords = { allowed: "allowed by a rule", learned: "learned", audited: "audited (Protect would deny)", denied: "denied" };

// themeColours reads the page's palette (app.css's custom properties, light or dark as the system
// asks) when the map is drawn: the canvas cannot use CSS variables itself.
function themeColours() {
  const css = getComputedStyle(document.documentElement);
  const c = {};
  for (const k of ["fg", "surface", "ok", "learn", "audit", "deny", "focus", "node-peer", "node-workload", "node-outside"]) {
    c[k] = css.getPropertyValue("--" + k).trim();
  }
  return c;
}

// mapStyle is the map's stylesheet in the theme's colours c (see themeColours).
const mapStyle = (c) => [
  { selector: "node", style: { label: "data(label)", "font-size": 11, "font-family": "system-ui, sans-serif", color: c.fg,
    "text-valign": "bottom", "text-margin-y": 3, width: 16, height: 16, "background-color": c["node-peer"] } },
  { selector: "node[kind = 'workload']", style: { "background-color": c["node-workload"] } },
  { selector: "node[kind = 'workload'][mode = 'Protect']", style: { "border-width": 3, "border-color": c.ok } },
  { selector: "node[kind = 'workload'][mode = 'Monitor']", style: { "border-width": 3, "border-color": c.audit } },
  { selector: "node[kind = 'peer']", style: { shape: "round-rectangle" } },
  { selector: "node[kind = 'outside']", style: { shape: "diamond", "background-color": c["node-outside"] } },
  { selector: ":parent", style: { "text-valign": "top", "text-margin-y": -3, "font-weight": "bold", "font-size": 12,
    "background-color": c.fg, "background-opacity": 0.05, "border-width": 1, "border-color": c.fg, "border-opacity": 0.25, shape: "round-rectangle", padding: 14 } },
  { selector: "edge", style: { width: "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
    label: "data(label)", "font-size": 9, "font-family": "system-ui, sans-serif", color: c.fg,
    "text-background-color": c.surface, "text-background-opacity": 0.9, "text-background-padding": 1 } },
  { selector: "edge[verdict = 'allowed']", style: { "line-color": c.ok, "target-arrow-color": c.ok } },
  { selector: "edge[verdict = 'learned']", style: { "line-color": c.learn, "target-arrow-color": c.learn, "line-style": "dashed" } },
  { selector: "edge[verdict = 'audited']", style: { "line-color": c.audit, "target-arrow-color": c.audit, "line-style": "dashed" } },
  { selector: "edge[verdict = 'denied']", style: { "line-color": c.deny, "target-arrow-color": c.deny } },
  { selector: "edge[count = 0]", style: { opacity: 0.35, width: 1 } },
  { selector: "edge.unlabelled", style: { label: "" } },
  { selector: ":selected", style: { "overlay-color": c.focus, "overlay-opacity": 0.2, "overlay-padding": 4 } },
];

async function showMap() {
  if (typeof cytoscape === "undefined") {
    throw new Error("the map's library is not in this build of policygen: build it with make (make ui-assets)");
  }
  const started = performance.now();
  mapState.data = await api("graph?window=" + encodeURIComponent($("map-window").value));
  showUnreachable($("map-replicas"), mapState.data.unreachable);
  fillMapFilters(mapState.data);
  await drawMap(started);
}

// fillMapFilters offers the namespaces and workloads there are, keeping what is chosen.
function fillMapFilters(g) {
  const workloads = g.nodes.filter((n) => n.kind === "workload");
  const fill = (sel, values) => setChoices(sel, values, values.includes(sel.value) ? sel.value : "");
  fill($("map-ns"), workloads.map((n) => n.namespace));
  fill($("map-workload"), workloads.map((n) => n.id));
}

// visible returns the nodes and edges the filters keep: the edges of the chosen verdict touching the
// chosen namespace and workload, their ends, the chosen namespace's workloads, and the groups holding them.
function visible(g) {
  const ns = $("map-ns").value, wl = $("map-workload").value, verdict = $("map-verdict").value;
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const inNs = (id) => byId.get(id) && byId.get(id).parent === "group:" + ns;
  const edges = g.edges.filter((e) => (!verdict || e.verdict === verdict) &&
    (!ns || inNs(e.from) || inNs(e.to)) && (!wl || e.from === wl || e.to === wl));
  const keep = new Set(edges.flatMap((e) => [e.from, e.to]));
  for (const n of g.nodes) {
    if (n.kind === "workload" && (wl ? n.id === wl : !ns || n.namespace === ns) && !verdict) keep.add(n.id);
  }
  for (const id of [...keep]) if (byId.get(id).parent) keep.add(byId.get(id).parent);
  return { nodes: g.nodes.filter((n) => keep.has(n.id)), edges };
}

// edgeLabel is an edge's ports and connections in the window; a rule nothing used in the window is
// drawn faint and unlabelled (its ports are in its details), so that the traffic stands out.
function edgeLabel(e) {
  return e.count > 0 ? e.ports.join(", ") + " ×" + e.count : "";
}

// drawMap lays out what the filters keep and marks the map with the milliseconds since started
// (data-render-ms): the time to a readable map, which the browser test and the benchmark wait for.
function drawMap(started = performance.now()) {
  const { nodes, edges } = visible(mapState.data);
  if (mapState.cy) mapState.cy.destroy();
  $("map-details").hidden = true;
  $("map-empty").hidden = nodes.length > 0;
  const cy = cytoscape({
    container: $("map"), style: mapStyle(themeColours()), wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 3,
    elements: [
      ...nodes.map((n) => ({ group: "nodes", data: { ...n, parent: n.parent || undefined } })),
      ...edges.map((e) => ({ group: "edges", data: { id: e.id, source: e.from, target: e.to, verdict: e.verdict,
        count: e.count, label: edgeLabel(e), width: 1.5 + Math.min(4, Math.log10(1 + e.count)), edge: e } })),
    ],
  });
  mapState.cy = cy;
  window.podwallMap = cy; // for the browser test and the console
  cy.on("tap", "edge", (ev) => showEdge(ev.target.data("edge")));
  cy.on("tap", "node", (ev) => showNode(ev.target.data()));
  cy.on("tap", (ev) => { if (ev.target === cy) $("map-details").hidden = true; });
  return new Promise((resolve) => {
    cy.one("layoutstop", () => {
      declutter(cy);
      cy.fit(undefined, 24);
      $("map").dataset.renderMs = String(Math.round(performance.now() - started));
      resolve();
    });
    cy.layout({ name: "fcose", quality: "default", randomize: true, animate: false, nodeDimensionsIncludeLabels: true,
      idealEdgeLength: () => 110, nodeRepulsion: () => 9000, nodeSeparation: 90, packComponents: true, tile: true }).run();
  });
}

// labelBox is the model-space box of an element's own label, or null when it draws none.
function labelBox(ele) {
  if (!ele.style("label") || ele.hasClass("unlabelled")) return null;
  return ele.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: true, includeOverlays: false });
}

function overlaps(a, b) {
  return a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
}

// declutter keeps edge labels off node labels, node bodies and each other: the busiest edges first,
// each label tried at its middle and then above and below it; a label that fits nowhere is left out
// of the drawing (the edge's details still say it) and counted in the legend.
function declutter(cy) {
  const taken = [];
  cy.nodes().forEach((n) => {
    const box = labelBox(n);
    if (box && box.w > 0) taken.push(box);
    if (!n.isParent()) taken.push(n.boundingBox({ includeLabels: false, includeOverlays: false }));
  });
  let hidden = 0;
  const edges = cy.edges().sort((a, b) => b.data("edge").count - a.data("edge").count);
  // A label moved by text-margin-y moves by exactly that in model space: measure it once, where it is.
  const moves = [];
  edges.forEach((e) => {
    const at = e.data("label") && labelBox(e);
    if (!at) return;
    for (const dy of [0, -11, 11, -22, 22]) {
      const box = { x1: at.x1, x2: at.x2, y1: at.y1 + dy, y2: at.y2 + dy };
      if (!taken.some((t) => overlaps(box, t))) {
        taken.push(box);
        if (dy) moves.push([e, dy]);
        return;
      }
    }
    moves.push([e, null]);
    hidden++;
  });
  cy.batch(() => {
    for (const [e, dy] of moves) {
      if (dy === null) e.addClass("unlabelled");
      else e.style("text-margin-y", dy);
    }
  });
  $("map-hidden").textContent = hidden ? hidden + " edge labels left out where they would overlap: click an edge for its ports and counts" : "";
}

function showEdge(e) {
  const box = $("map-details");
  box.replaceChildren(el("h3", e.from + " → " + e.to));
  box.appendChild(el("p", verdictWords[e.verdict] + ": " + (e.ports.join(", ") || "no port") + ", " + e.count +
    " connections in the last " + mapState.data.window, "verdict-" + e.verdict));
  box.appendChild(el("p", "Decided by " + e.rules.map((r) => (r === "default" ? "the mode's default" : "rule " + r)).join(", ") + "."));
  if (e.policy) box.appendChild(policyLink(e.namespace, e.policy));
  if (e.recent.length) {
    box.appendChild(el("h4", "Latest verdict lines"));
    const ul = el("ul", undefined, "recent");
    for (const v of e.recent) {
      ul.appendChild(el("li", new Date(v.time).toLocaleTimeString() + " " + v.verdict + " " + v.namespace + "/" + v.pod + " " +
        v.direction + " " + peerText(v) + " " + v.protocol + " " + v.port + " rule " + v.rule + " ×" + v.count));
    }
    box.appendChild(ul);
  } else {
    box.appendChild(el("p", "No connection reported in this window: the edge is a rule of the policy.", "hint"));
  }
  box.hidden = false;
}

function showNode(n) {
  const box = $("map-details");
  if (n.kind === "group") return;
  box.replaceChildren(el("h3", n.id));
  if (n.policy) {
    box.appendChild(el("p", "Mode: " + n.mode, "mode mode-" + n.mode));
    const r = n.rules || {};
    box.appendChild(el("p", "Rules: " + (r.manifest || 0) + " from the manifest, " + (r.learned || 0) + " learned, " + (r.user || 0) + " by people."));
    box.appendChild(el("p", "Sidecars in sync: " + (n.inSync || 0) + " / " + (n.sidecars || 0) + "."));
    box.appendChild(el("p", coverageInWords(n.coverage)));
    box.appendChild(el("p", wouldDenyInWords(n.wouldDenyFlows, n.mode), n.wouldDenyFlows ? "bad" : ""));
    for (const p of n.pods || []) box.appendChild(podState(p, n.mode));
    box.appendChild(policyLink(n.namespace, n.policy));
  } else {
    box.appendChild(el("p", n.kind === "outside" ? "Outside the cluster." : "No policy of its own here.", "hint"));
  }
  box.hidden = false;
}

function policyLink(ns, name) {
  const a = el("a", "Policy " + ns + "/" + name);
  a.href = policyHref(ns, name);
  a.className = "policy-link";
  const p = el("p");
  p.appendChild(a);
  return p;
}

function initMap() {
  $("map-window").addEventListener("change", () => showMap().catch(showError));
  for (const id of ["map-ns", "map-workload", "map-verdict"]) {
    $(id).addEventListener("change", () => drawMap().catch(showError));
  }
  // A change of the system's theme recolours the map drawn; the layout stays.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (mapState.cy) mapState.cy.style(mapStyle(themeColours()));
  });
}
