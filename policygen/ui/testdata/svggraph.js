// The benchmark's baseline (map_bench_test.go): the connection graph the service map replaced, nodes on
// a circle and straight edges drawn as SVG, on the same /ui/api/graph. svgGraphBaseline() returns the
// milliseconds from asking for the graph to the SVG laid out in the page.
async function svgGraphBaseline() {
  const started = performance.now();
  const g = await api("graph?window=1h");
  const ns = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const nodes = g.nodes.filter((n) => n.kind !== "group");
  const size = 720, r = Math.max(120, size / 2 - 150), c = size / 2;
  const root = svg("svg", { viewBox: `0 0 ${size} ${size}`, width: size, height: size });
  const pos = {};
  nodes.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(nodes.length, 1) - Math.PI / 2;
    pos[n.id] = [c + r * Math.cos(a), c + r * Math.sin(a)];
  });
  for (const e of g.edges) {
    const [x1, y1] = pos[e.from], [x2, y2] = pos[e.to];
    root.appendChild(svg("line", { x1, y1, x2, y2, stroke: "#888" }));
    root.appendChild(svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2, "font-size": 10 }, e.ports.join(", ")));
  }
  for (const n of nodes) {
    const [x, y] = pos[n.id];
    root.appendChild(svg("circle", { cx: x, cy: y, r: 12 }));
    root.appendChild(svg("text", { x: x + 16, y: y + 4, "font-size": 11 }, n.id));
  }
  const holder = document.createElement("div");
  holder.appendChild(root);
  document.body.appendChild(holder);
  root.getBBox(); // lay it out
  await new Promise(requestAnimationFrame);
  const ms = performance.now() - started;
  holder.remove();
  return ms;
}
