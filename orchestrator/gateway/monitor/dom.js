// Building the page. Every value goes in as text (text nodes, attributes), never as HTML:
// saga data, ids and error details come from outside.

const SVG_NS = "http://www.w3.org/2000/svg";

export const STATUSES = [
  "running",
  "compensating",
  "succeeded",
  "compensated",
  "failed",
  "aborted",
];

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function assign(element, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name.startsWith("on")) {
      // Handlers are functions only: an "on..." attribute would be text run as script.
      if (typeof value !== "function") {
        throw new TypeError(`${name} must be a function`);
      }
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/** `h("a", {href: "#/x", class: "y"}, "text", child...)`: an HTML element. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  assign(element, attributes);
  append(element, children);
  return element;
}

/** The same for an SVG element. */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  assign(element, attributes);
  append(element, children);
  return element;
}

export function fill(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
  return parent;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** An ISO time as local "YYYY-MM-DD HH:MM:SS"; "-" for none. */
export function when(iso) {
  if (!iso) {
    return "-";
  }
  const d = new Date(iso);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** Seconds as "1h 2m", "2m 5s", "4s". */
export function span(seconds) {
  let left = Math.round(Math.abs(seconds));
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (left >= size) {
      parts.push(`${Math.floor(left / size)}${unit}`);
      left %= size;
    }
  }
  if (left || parts.length === 0) {
    parts.push(`${left}s`);
  }
  return parts.slice(0, 2).join(" ");
}

/** "in 1m 40s" or "3s ago", from now. */
export function relative(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  return seconds >= 0 ? `in ${span(seconds)}` : `${span(seconds)} ago`;
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}`, "data-status-badge": status }, status);
}

/** A table: `columns` are header texts, `rows` arrays of cells (text or nodes). */
export function table(columns, rows, attributes = {}) {
  return h(
    "table",
    attributes,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      rows.map((row) => (row instanceof Node ? row : h("tr", {}, row.map((c) => h("td", {}, c))))),
    ),
  );
}
