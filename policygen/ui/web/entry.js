// The map's library, bundled by `make ui-assets` into ../assets/vendor/cytoscape.min.js: cytoscape
// with the fCoSE layout (compound nodes: workloads grouped by namespace), as the global `cytoscape`.
import cytoscape from "cytoscape";
import fcose from "cytoscape-fcose";

cytoscape.use(fcose);
window.cytoscape = cytoscape;
