// The machines view: per machine, sagas by status and by state on its diagram, step latency,
// stuck sagas and dead letters; pause and resume.

import { act } from "./actions.js";
import { enc, get, withQuery } from "./api.js";
import { COMPENSATE, loadDiagram, noDiagram, showCounts } from "./diagram.js";
import { fill, h, STATUSES, statusBadge, table, when } from "./dom.js";

const sagasLink = (params) => withQuery("#/sagas", params);

/** Node name -> [[status, count], ...] for the diagram's badges. */
function nodeCounts(stats) {
  const counts = new Map();
  for (const [state, byStatus] of Object.entries(stats.states)) {
    counts.set(state, STATUSES.map((status) => [status, byStatus[status] || 0]));
  }
  // The compensate node stands for the outcome: every saga compensating or compensated.
  counts.set(COMPENSATE, [
    ["compensating", stats.counts.compensating],
    ["compensated", stats.counts.compensated],
  ]);
  return counts;
}

function statusCounts(machine, stats) {
  return h(
    "div",
    { class: "figure" },
    h("h3", {}, "Sagas"),
    h(
      "dl",
      { class: "counts" },
      STATUSES.map((status) => [
        h("dt", {}, statusBadge(status)),
        h(
          "dd",
          {},
          h(
            "a",
            {
              class: "count",
              "data-status": status,
              href: sagasLink({ machine, status }),
              title: `list the ${status} sagas of ${machine}`,
            },
            String(stats.counts[status]),
          ),
        ),
      ]),
      h("dt", {}, h("span", { class: "status status-stuck" }, "stuck")),
      h(
        "dd",
        {},
        h(
          "a",
          {
            class: "count",
            "data-stuck": "",
            href: sagasLink({ machine, stuck: "true", stuck_after: stats.stuck_after }),
            title: `unfinished and past a deadline by ${stats.stuck_after} s, or flagged`,
          },
          String(stats.stuck),
        ),
      ),
    ),
  );
}

function latency(stats) {
  const ms = stats.step_latency_ms;
  return h(
    "div",
    { class: "figure" },
    h("h3", {}, "Step latency"),
    h(
      "dl",
      { class: "counts" },
      ["p50", "p95", "p99"].map((label) => [
        h("dt", {}, label),
        h("dd", { "data-latency": label }, ms[label] === null ? "-" : `${ms[label]} ms`),
      ]),
    ),
    h(
      "p",
      { class: "muted", "data-steps-sampled": stats.steps_sampled },
      `command sent to reply, ${stats.steps_sampled} steps sampled`,
    ),
  );
}

function deadLetters(stats) {
  const rows = Object.entries(stats.dead_letters).map(([queue, depth]) =>
    h(
      "tr",
      { "data-queue": queue, class: depth ? "bad" : "" },
      h("td", {}, queue),
      h(
        "td",
        { class: "num", "data-depth": depth ?? "" },
        depth === null ? "not declared" : String(depth),
      ),
    ),
  );
  return h(
    "div",
    { class: "figure" },
    h("h3", {}, "Dead letters"),
    table(["queue", "messages"], rows, { class: "compact" }),
  );
}

function byState(machine, summary, stats) {
  // The machine's order first; then states of older versions that still hold sagas.
  const states = [
    ...summary.states.filter((state) => state in stats.states),
    ...Object.keys(stats.states).filter((state) => !summary.states.includes(state)),
  ];
  if (states.length === 0) {
    return h("p", { class: "muted" }, "No sagas yet.");
  }
  const rows = states.map((state) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: sagasLink({ machine, state }) }, state)),
      STATUSES.map((status) => {
        const count = (stats.states[state] || {})[status] || 0;
        return h(
          "td",
          { class: count ? "num" : "num muted", "data-state": state, "data-status": status },
          String(count),
        );
      }),
    ),
  );
  return table(["state", ...STATUSES], rows, { class: "compact" });
}

class MachineCard {
  constructor(name) {
    this.name = name;
    this.title = h("h2", {});
    this.pause = h("button", { type: "button", class: "pause" });
    this.pause.addEventListener("click", () => this.togglePause());
    this.verdict = h("div", { class: "verdict", role: "status" });
    this.figures = h("div", { class: "figures" });
    this.diagram = h("div", { class: "diagram" }, h("p", { class: "muted" }, "drawing…"));
    this.states = h("div", {});
    const statesBox = h(
      "details",
      { class: "by-state", open: true },
      h("summary", {}, "Sagas by current state (a finished saga: the state it ended in)"),
      this.states,
    );
    this.svg = null;
    this.version = null;
    this.element = h(
      "section",
      { class: "card machine", "data-machine": name },
      h("header", { class: "card-head" }, this.title, this.pause),
      this.verdict,
      this.figures,
      this.diagram,
      statesBox,
    );
  }

  async update(summary, stats) {
    this.summary = summary;
    const paused = summary.paused;
    fill(
      this.title,
      h("a", { href: `#/machine/${enc(summary.name)}`, class: "machine-link" }, summary.name),
      h("span", { class: "muted" }, ` v${summary.latest_version}`),
      summary.description ? h("small", {}, summary.description) : null,
      paused
        ? h(
            "span",
            { class: "paused", "data-paused": "" },
            `paused by ${paused.by} since ${when(paused.at)}`,
            paused.reason ? `: ${paused.reason}` : "",
          )
        : null,
    );
    this.pause.textContent = paused ? "Resume new sagas" : "Pause new sagas";
    fill(
      this.figures,
      statusCounts(summary.name, stats),
      latency(stats),
      deadLetters(stats),
    );
    fill(this.states, byState(summary.name, summary, stats));
    await this.draw(summary.latest_version);
    if (this.svg) {
      showCounts(this.svg, nodeCounts(stats), (node) => {
        // No saga's state is `compensate`: its node lists the sagas that went there.
        const filter =
          node === COMPENSATE ? { status: ["compensating", "compensated"] } : { state: node };
        location.hash = sagasLink({ machine: summary.name, ...filter });
      });
    }
  }

  async draw(version) {
    if (this.svg && this.version === version) {
      return;
    }
    try {
      const svg = await loadDiagram(this.name, version);
      fill(this.diagram, svg);
      this.svg = svg;
      this.version = version;
    } catch (error) {
      this.svg = null;
      fill(this.diagram, noDiagram(error));
    }
  }

  togglePause() {
    const paused = Boolean(this.summary && this.summary.paused);
    const verb = paused ? "resume" : "pause";
    act({
      title: paused ? `Resume machine ${this.name}` : `Pause machine ${this.name}`,
      text: paused
        ? "New sagas of this machine will start again."
        : "The daemon will refuse new sagas of this machine; running ones go on.",
      path: `/v1/machines/${enc(this.name)}/${verb}`,
      verdict: this.verdict,
      buttons: [this.pause],
      describe: (answer) =>
        answer.paused ? `paused by ${answer.paused.by}` : "new sagas may start again",
    });
  }
}

/** Every machine, or only the one named `only`. */
export function machinesView(only = null) {
  const root = h("div", { class: "machines" });
  const cards = new Map();

  async function refresh() {
    let machines = await get("/v1/machines");
    if (only !== null) {
      machines = machines.filter((machine) => machine.name === only);
      if (machines.length === 0) {
        fill(root, h("p", { class: "bad" }, `No machine ${only}.`));
        return;
      }
    }
    const stats = await Promise.all(
      machines.map((machine) => get(`/v1/machines/${enc(machine.name)}/stats`)),
    );
    if (machines.length === 0) {
      const none = "No machines yet: the daemon stores them when it starts.";
      fill(root, h("p", { class: "muted" }, none));
      cards.clear();
      return;
    }
    const shown = machines.map((machine) => {
      if (!cards.has(machine.name)) {
        cards.set(machine.name, new MachineCard(machine.name));
      }
      return cards.get(machine.name);
    });
    const inPlace = shown.every((card, i) => root.children[i] === card.element);
    if (!inPlace || root.children.length !== shown.length) {
      fill(root, shown.map((card) => card.element));
    }
    await Promise.all(shown.map((card, i) => card.update(machines[i], stats[i])));
  }

  return { element: root, refresh, title: only === null ? "Machines" : `Machine ${only}` };
}
