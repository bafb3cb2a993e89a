// A machine's diagram: Graphviz's SVG from the gateway, annotated in the page.
//
// Graphviz gives each node a <g class="node"> whose <title> is the state's name, and each
// transition a <g class="edge"> titled "from->to"; counts and a saga's path are found by them.

import { ApiError, enc, getText } from "./api.js";
import { h, s } from "./dom.js";

export const COMPENSATE = "compensate";

const drawn = new Map(); // "machine@version" -> Promise of the SVG's text

function svgText(machine, version) {
  const key = `${machine}@${version}`;
  if (!drawn.has(key)) {
    const loading = getText(`/v1/machines/${enc(machine)}/diagram.svg?version=${version}`);
    // A failure is not kept: the next refresh asks again (e.g. once Graphviz is installed).
    loading.catch(() => drawn.delete(key));
    drawn.set(key, loading);
  }
  return drawn.get(key);
}

// Only drawing is kept: anything that could run or load something is dropped, whatever the
// machine's labels held.
function sanitize(root) {
  for (const bad of root.querySelectorAll("script, foreignObject, iframe, a, image, use")) {
    bad.replaceWith(...bad.childNodes);
  }
  for (const element of [root, ...root.querySelectorAll("*")]) {
    for (const attribute of [...element.attributes]) {
      const name = attribute.name.toLowerCase();
      if (name.startsWith("on") || name.endsWith("href")) {
        element.removeAttribute(attribute.name);
      }
    }
  }
}

/** A new <svg> of the machine version's diagram; `ApiError` when the gateway has none. */
export async function loadDiagram(machine, version) {
  const text = await svgText(machine, version);
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
  if (parsed.querySelector("parsererror") || parsed.documentElement.nodeName !== "svg") {
    throw new ApiError(500, "the diagram the gateway sent is not SVG");
  }
  const svg = document.importNode(parsed.documentElement, true);
  sanitize(svg);
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `diagram of ${machine} v${version}`);
  return svg;
}

/** Node name -> its <g class="node">. */
export function nodesOf(svg) {
  const nodes = new Map();
  for (const node of svg.querySelectorAll("g.node")) {
    const title = node.querySelector(":scope > title");
    if (title) {
      nodes.set(title.textContent, node);
    }
  }
  return nodes;
}

function edgesOf(svg) {
  const edges = new Map();
  for (const edge of svg.querySelectorAll("g.edge")) {
    const title = edge.querySelector(":scope > title");
    if (title) {
      const key = title.textContent;
      edges.set(key, [...(edges.get(key) || []), edge]);
    }
  }
  return edges;
}

/**
 * Put count badges on the nodes: `counts` maps a node name to [[status, count], ...]. The
 * badges sit on the node's top edge, right-aligned, one per status, coloured by status.
 */
export function showCounts(svg, counts, onNodeClick) {
  for (const old of svg.querySelectorAll("g.badges")) {
    old.remove();
  }
  for (const [name, node] of nodesOf(svg)) {
    if (onNodeClick && !node.dataset.clickable && name !== "start") {
      node.dataset.clickable = "yes";
      node.addEventListener("click", () => onNodeClick(name));
    }
    const shown = (counts.get(name) || []).filter(([, count]) => count > 0);
    if (shown.length === 0) {
      continue;
    }
    const box = node.getBBox();
    const group = s("g", { class: "badges", "data-state": name });
    let right = box.x + box.width + 6;
    for (const [status, count] of [...shown].reverse()) {
      const text = String(count);
      const width = 14 + 9 * text.length;
      right -= width + 3;
      group.append(
        s(
          "g",
          { class: `badge status-${status}`, "data-status": status, "data-count": text },
          s("title", {}, `${count} ${status}`),
          s("rect", { x: right, y: box.y - 12, width, height: 22, rx: 11 }),
          s("text", { x: right + width / 2, y: box.y + 4, "text-anchor": "middle" }, text),
        ),
      );
    }
    node.append(group);
  }
}

/** Mark the nodes and transitions of a saga's path (`GET /v1/sagas/{id}/path`). */
export function showPath(svg, path) {
  const nodes = nodesOf(svg);
  for (const [name, node] of nodes) {
    node.classList.toggle("visited", path.visited.includes(name));
    node.classList.toggle("current", path.current === name);
  }
  const taken = new Map(); // "from->to" -> the labels taken (null: not known)
  for (const edge of path.edges) {
    const key = `${edge.source}->${edge.target}`;
    taken.set(key, [...(taken.get(key) || []), edge.label]);
  }
  for (const [key, edges] of edgesOf(svg)) {
    const labels = taken.get(key) || [];
    // Two transitions may join the same states (a failure event and "timed out"): the one
    // whose label the saga's history names, or every one when the history does not tell.
    const named = edges.filter((edge) => labels.includes(edgeLabel(edge)));
    const lit = named.length > 0 ? named : labels.length > 0 ? edges : [];
    for (const edge of edges) {
      edge.classList.toggle("taken", lit.includes(edge));
    }
  }
}

function edgeLabel(edge) {
  return [...edge.querySelectorAll(":scope > text")].map((t) => t.textContent).join(" ");
}

/** A placeholder saying why there is no diagram. */
export function noDiagram(error) {
  return h("p", { class: "bad diagram-problem" }, error.message);
}
