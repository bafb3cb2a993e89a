// The saga list: the filters of `sagawire sagas list`, kept in the address (#/sagas?...), a
// page at a time, newest update first.

import { enc, get, withQuery } from "./api.js";
import { fill, h, relative, STATUSES, statusBadge, table, when } from "./dom.js";

const LIMITS = [20, 50, 100, 200];

/** The filters in the address as the API's query parameters. */
function filtersOf(query) {
  return {
    machine: query.get("machine") || "",
    status: query.getAll("status"),
    state: query.get("state") || "",
    label: query.get("label") || "",
    since: query.get("since") || "",
    until: query.get("until") || "",
    stuck: query.get("stuck") === "true",
    stuck_after: query.get("stuck_after") || "",
    limit: Number(query.get("limit")) || LIMITS[0],
    page: Math.max(1, Number(query.get("page")) || 1),
  };
}

function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

function filterForm(filters, onApply) {
  const machine = h("select", { name: "machine" }, h("option", { value: "" }, "any machine"));
  const states = h("datalist", { id: "known-states" });
  const text = (name, value, placeholder) =>
    h("input", {
      name,
      value,
      placeholder,
      size: 14,
      list: name === "state" ? "known-states" : null,
    });
  const inputs = {
    state: text("state", filters.state, "any state"),
    label: text("label", filters.label, "any label"),
    since: text("since", filters.since, "e.g. 15m, 2h, ISO"),
    until: text("until", filters.until, "e.g. 1h, ISO"),
    stuckAfter: h("input", {
      name: "stuck_after",
      value: filters.stuck_after,
      placeholder: "60",
      size: 4,
      inputmode: "decimal",
    }),
  };
  const stuck = h("input", { type: "checkbox", name: "stuck", checked: filters.stuck });
  const statuses = STATUSES.map((status) =>
    h(
      "label",
      { class: "check" },
      h("input", {
        type: "checkbox",
        name: "status",
        value: status,
        checked: filters.status.includes(status),
      }),
      statusBadge(status),
    ),
  );
  const limit = h(
    "select",
    { name: "limit" },
    LIMITS.map((n) => h("option", { value: n, selected: n === filters.limit }, `${n} a page`)),
  );
  const form = h(
    "form",
    { class: "filters", id: "saga-filters" },
    field("Machine", machine),
    field("State", inputs.state),
    field("Label", inputs.label),
    field("Updated since", inputs.since),
    field("until", inputs.until),
    h("fieldset", { class: "statuses" }, h("legend", {}, "Status"), statuses),
    h(
      "label",
      { class: "check" },
      stuck,
      " stuck: past a deadline by ",
      inputs.stuckAfter,
      " s, or flagged",
    ),
    limit,
    h("button", { type: "submit", id: "apply-filters" }, "Apply"),
    h("button", { type: "button", id: "clear-filters", onclick: () => onApply({}) }, "Clear"),
    states,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onApply({
      machine: machine.value,
      status: statuses
        .map((label) => label.querySelector("input"))
        .filter((input) => input.checked)
        .map((input) => input.value),
      state: inputs.state.value.trim(),
      label: inputs.label.value.trim(),
      since: inputs.since.value.trim(),
      until: inputs.until.value.trim(),
      stuck: stuck.checked ? "true" : "",
      stuck_after: stuck.checked ? inputs.stuckAfter.value.trim() : "",
      limit: limit.value,
    });
  });
  /** Fill the machine and state choices once the machines are known. */
  form.knowMachines = (machines) => {
    if (machine.options.length > 1) {
      return;
    }
    for (const m of machines) {
      machine.append(h("option", { value: m.name, selected: m.name === filters.machine }, m.name));
    }
    const names = new Set(machines.flatMap((m) => m.states));
    fill(states, [...names].sort().map((name) => h("option", { value: name })));
  };
  return form;
}

function sagaRow(saga) {
  const wait = saga.flagged
    ? h("span", { class: "bad" }, `flagged: ${saga.flagged}`)
    : saga.deadline
      ? `${when(saga.deadline)} (${relative(saga.deadline)})`
      : "-";
  return h(
    "tr",
    { "data-saga": saga.saga_id },
    h("td", {}, h("a", { href: `#/saga/${enc(saga.saga_id)}`, class: "saga-link" }, saga.saga_id)),
    h("td", {}, `${saga.machine} v${saga.machine_version}`),
    h("td", {}, statusBadge(saga.status)),
    h("td", {}, saga.states.join(", ")),
    h("td", {}, saga.label || "-"),
    h("td", {}, when(saga.updated_at)),
    h("td", {}, wait),
  );
}

export function sagasView(query) {
  const filters = filtersOf(query);
  const go = (params) => {
    location.hash = withQuery("#/sagas", params);
  };
  const form = filterForm(filters, go);
  const results = h("div", { class: "results", "aria-live": "polite" });
  const pager = h("div", { class: "pager" });
  const root = h("div", { class: "sagas" }, h("h2", {}, "Sagas"), form, pager, results);
  const params = {
    ...filters,
    stuck: filters.stuck ? "true" : "",
    limit: filters.limit,
    page: filters.page,
  };
  let machinesKnown = false;

  function page(number) {
    go({ ...params, page: number });
  }

  async function refresh() {
    if (!machinesKnown) {
      form.knowMachines(await get("/v1/machines"));
      machinesKnown = true;
    }
    const found = await get(withQuery("/v1/sagas", params));
    const first = found.total === 0 ? 0 : (found.page - 1) * found.limit + 1;
    const last = Math.min(found.total, found.page * found.limit);
    fill(
      pager,
      h("span", { class: "range" }, `${first}–${last} of ${found.total}`),
      h(
        "button",
        { type: "button", disabled: found.page <= 1, onclick: () => page(found.page - 1) },
        "‹ Newer",
      ),
      h(
        "button",
        { type: "button", disabled: last >= found.total, onclick: () => page(found.page + 1) },
        "Older ›",
      ),
    );
    if (found.sagas.length === 0) {
      fill(results, h("p", { class: "muted", id: "no-sagas" }, "No saga matches these filters."));
      return;
    }
    fill(
      results,
      table(
        ["saga", "machine", "status", "state", "label", "updated", "deadline / flagged"],
        found.sagas.map(sagaRow),
        { id: "saga-table" },
      ),
    );
  }

  return { element: root, refresh, title: "Sagas" };
}
