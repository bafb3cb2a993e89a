// One saga: its path on the diagram, pending steps with deadlines, timeline, data and outbox,
// and the operator's actions on it.

import { act } from "./actions.js";
import { ApiError, enc, get } from "./api.js";
import { loadDiagram, noDiagram, showPath } from "./diagram.js";
import { fill, h, relative, statusBadge, table, when } from "./dom.js";

const ACTIONS = [
  {
    id: "retry",
    label: "Retry",
    text: "Send the pending steps' commands again, as new attempts of the same visit.",
  },
  {
    id: "resume",
    label: "Resume",
    text: "Continue a compensation that gave up (a failed saga), once its cause is fixed.",
  },
  {
    id: "abort",
    label: "Abort",
    text: "Stop the saga where it is: it ends aborted, nothing is undone.",
  },
  {
    id: "abort-compensate",
    label: "Abort with compensation",
    verb: "abort",
    body: { compensate: true },
    text: "Undo the steps done (their compensations, newest first), then end aborted.",
  },
];

function facts(saga) {
  const rows = [
    ["status", statusBadge(saga.status)],
    ["state", h("span", { "data-field": "state" }, saga.state)],
    ["label", saga.label || "-"],
    ["flagged", saga.flagged ? h("span", { class: "bad" }, saga.flagged) : "-"],
    [
      "machine",
      h(
        "a",
        { href: `#/machine/${enc(saga.machine)}` },
        `${saga.machine} v${saga.machine_version}`,
      ),
    ],
    ["created", when(saga.created_at)],
    ["updated", when(saga.updated_at)],
    ["finished", when(saga.finished_at)],
    ["store version", String(saga.version)],
  ];
  if (saga.compensation) {
    const c = saga.compensation;
    rows.push([
      "compensation",
      `${c.reason}; done: ${c.done.join(", ") || "none"}; ` +
        `left: ${c.remaining.map((r) => r.step).join(", ") || "none"}`,
    ]);
  }
  if (saga.traceparent) {
    rows.push(["traceparent", saga.traceparent]);
  }
  return h(
    "dl",
    { class: "facts" },
    rows.map(([name, value]) => [h("dt", {}, name), h("dd", { "data-fact": name }, value)]),
  );
}

function pending(saga) {
  if (saga.pending.length === 0) {
    return h("p", { class: "muted" }, "Nothing pending.");
  }
  return table(
    ["step", "service.command", "phase", "attempt", "waiting", "sent", "deadline", "key"],
    saga.pending.map((p) => [
      p.step,
      `${p.service}.${p.command}`,
      p.phase,
      `${p.attempt}/${p.max_attempts}`,
      p.waiting,
      when(p.sent_at),
      h(
        "span",
        { class: new Date(p.deadline) < new Date() ? "bad" : "" },
        `${when(p.deadline)} (${relative(p.deadline)})`,
      ),
      p.idempotency_key,
    ]),
    { id: "pending-steps" },
  );
}

function timeline(saga) {
  const rows = [...saga.history].reverse().map((entry) =>
    h(
      "tr",
      { "data-event": entry.event },
      h("td", {}, when(entry.at)),
      h("td", {}, entry.event),
      h("td", {}, entry.state || ""),
      h("td", {}, entry.step ? `${entry.step}${entry.attempt ? ` #${entry.attempt}` : ""}` : ""),
      h("td", {}, entry.detail || ""),
      h("td", {}, entry.by),
    ),
  );
  return [
    saga.history_dropped
      ? h("p", { class: "muted" }, `${saga.history_dropped} older entries dropped.`)
      : null,
    table(["at", "event", "state", "step", "detail", "by"], rows, { id: "timeline" }),
  ];
}

function outbox(saga) {
  if (saga.outbox.length === 0) {
    return h("p", { class: "muted" }, "Empty: every command was confirmed by the broker.");
  }
  return table(
    ["message id", "service.command", "step", "attempt", "payload"],
    saga.outbox.map((c) => [
      c.message_id,
      `${c.service}.${c.name}`,
      c.step,
      String(c.attempt),
      h("code", {}, JSON.stringify(c.payload)),
    ]),
  );
}

export function sagaView(sagaId) {
  const heading = h("h2", {}, "Saga ", h("span", { class: "saga-id" }, sagaId));
  const verdict = h("div", { class: "verdict", id: "verdict", role: "status" });
  const buttons = ACTIONS.map((action) =>
    h("button", { type: "button", id: `action-${action.id}`, class: "danger" }, action.label),
  );
  const about = h("div", { class: "facts-box" });
  const diagram = h("div", { class: "diagram" });
  const parts = {
    pending: h("div", {}),
    timeline: h("div", {}),
    data: h("pre", { class: "data", id: "saga-data" }),
    outbox: h("div", {}),
  };
  const root = h(
    "div",
    { class: "saga", "data-saga": sagaId },
    heading,
    h("div", { class: "actions" }, buttons),
    verdict,
    diagram,
    h(
      "div",
      { class: "saga-top" },
      about,
      h("div", {}, h("h3", {}, "Pending steps"), parts.pending),
    ),
    h("h3", {}, "Timeline, newest first"),
    parts.timeline,
    h("h3", {}, "Data"),
    parts.data,
    h("h3", {}, "Outbox"),
    parts.outbox,
  );
  let svg = null;
  let drawnFor = null;

  ACTIONS.forEach((action, i) => {
    buttons[i].addEventListener("click", () =>
      act({
        title: `${action.label} saga ${sagaId}`,
        text: action.text,
        path: `/v1/sagas/${enc(sagaId)}/${action.verb || action.id}`,
        body: action.body || {},
        verdict,
        buttons,
        describe: (saga) =>
          `saga ${saga.saga_id} is ${saga.status}, state ${saga.state}` +
          (saga.pending.length
            ? `; waiting on ${saga.pending.map((p) => `${p.step} attempt ${p.attempt}`).join(", ")}`
            : ""),
      }),
    );
  });

  async function draw(saga) {
    const key = `${saga.machine}@${saga.machine_version}`;
    if (drawnFor === key) {
      return;
    }
    try {
      svg = await loadDiagram(saga.machine, saga.machine_version);
      fill(diagram, svg);
    } catch (error) {
      svg = null;
      fill(diagram, noDiagram(error));
      return;
    }
    drawnFor = key;
  }

  async function refresh() {
    let saga;
    let path;
    try {
      [saga, path] = await Promise.all([
        get(`/v1/sagas/${enc(sagaId)}`),
        get(`/v1/sagas/${enc(sagaId)}/path`),
      ]);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        fill(about, h("p", { class: "bad" }, `No saga ${sagaId}.`));
        return;
      }
      throw error;
    }
    root.dataset.status = saga.status;
    fill(about, facts(saga));
    fill(parts.pending, pending(saga));
    fill(parts.timeline, timeline(saga));
    parts.data.textContent = JSON.stringify(saga.data, null, 2);
    fill(parts.outbox, outbox(saga));
    await draw(saga);
    if (svg) {
      showPath(svg, path);
    }
  }

  return { element: root, refresh, title: `Saga ${sagaId}` };
}
