"""The flow monitor in a real browser: headless Chromium on the gateway's page, beside a daemon
and the participant services over the real broker and store.

Sagas are started whose fate the demo's fault plan decides in advance: some end compensated (a
business failure at payment or stock), the others wait in `deliver_order` because the delivery
service's handler is broken (their commands dead-lettered). The page, read with a read token,
must show the same counts and latencies as `sagawire stats --json` and `sagawire sagas list`
on the same database; the saga list finds the waiting sagas by filter; Retry on a saga page is
refused for the read token (403, shown) and, once delivery is fixed and the token is an
operator's, confirmed and applied: the page shows the saga succeeded, its whole path lit on the
diagram. A second gateway without authentication serves the page with no token asked.
Screenshots of the three views go to reports/monitor/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time

import pytest
from e2e_browser import MonitorBrowser, chromium, required_programs
from e2e_gateway import OPERATOR, READER, dead_lettered, start_gateway, wait_gateway
from e2e_processes import ORDER_MACHINE, REPO, ProcessGroup, wait_ready, wait_serving, wait_until

from orchestrator.demo.participants import FaultPlan, example_order
from participants_sdk import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

FAILURE_RATE = 0.5
DELIVERY_DLQ = protocol.dead_letter_queue(protocol.command_queue("delivery"))
SCREENSHOTS = REPO / "reports" / "monitor"
STATUSES = ("running", "compensating", "succeeded", "compensated", "failed", "aborted")

# What the machine card shows, read in one go (the page re-draws it every poll).
MACHINE_FIGURES = """
const card = document.querySelector(`section.machine[data-machine="${arguments[0]}"]`);
if (!card) return null;
const out = {sagas: {}, latency: {}, states: {}, badges: {}, dead_letters: {}};
for (const a of card.querySelectorAll("a.count[data-status]")) {
  out.sagas[a.dataset.status] = Number(a.textContent);
}
for (const dd of card.querySelectorAll("[data-latency]")) {
  const text = dd.textContent.replace(" ms", "");
  out.latency[dd.dataset.latency] = text === "-" ? null : Number(text);
}
for (const td of card.querySelectorAll("td[data-state][data-status]")) {
  (out.states[td.dataset.state] ||= {})[td.dataset.status] = Number(td.textContent);
}
for (const badge of card.querySelectorAll("g.badges g.badge")) {
  const state = badge.parentNode.dataset.state;
  (out.badges[state] ||= {})[badge.dataset.status] = Number(badge.dataset.count);
}
for (const row of card.querySelectorAll("tr[data-queue]")) {
  const depth = row.querySelector("td[data-depth]").dataset.depth;
  out.dead_letters[row.dataset.queue] = depth === "" ? null : Number(depth);
}
out.sampled = Number(card.querySelector("[data-steps-sampled]").dataset.stepsSampled);
return out;
"""

# The saga page's diagram: the nodes reached, the current one, the transitions taken.
SAGA_PATH = """
const svg = document.querySelector("div.saga .diagram svg");
if (!svg) return null;
const title = (g) => g.querySelector(":scope > title").textContent;
return {
  visited: [...svg.querySelectorAll("g.node.visited")].map(title),
  current: [...svg.querySelectorAll("g.node.current")].map(title),
  taken: [...svg.querySelectorAll("g.edge.taken")].map(title),
};
"""


def planned_sagas(count_each: int) -> tuple[list[str], list[str]]:
    """Saga ids the fault plan sends to compensation (payment or stock fails), and as many that
    reach `deliver_order`."""
    plan = FaultPlan(rate=FAILURE_RATE)
    compensated: list[str] = []
    waiting: list[str] = []
    for n in range(1, 200):
        saga_id = f"mon-{n}"
        fails = plan.failure_for(saga_id)
        group = compensated if fails in ("payment", "stock") else waiting
        if len(group) < count_each:
            group.append(saga_id)
        if len(compensated) == len(waiting) == count_each:
            return compensated, waiting
    raise AssertionError("the fault plan gave too few sagas of each kind")


async def sagawire_cli(mongodb_url: str, *args: str) -> dict:
    """`sagawire ARGS --json` on the test's database, as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        "--json",
        cwd=REPO,
        env={**os.environ, "SAGAWIRE_MONGODB_URL": mongodb_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    if process.returncode != 0:
        raise AssertionError(f"sagawire {' '.join(args)} exited {process.returncode}: {err!r}")
    return json.loads(out)


async def the_cli_counts(
    mongodb_url: str, compensated: list[str], waiting: list[str]
) -> tuple[dict, dict]:
    """`sagawire stats` and `sagawire sagas list --state deliver_order` once they count the
    planned outcomes: on FerretDB the documents they read may trail a save by a few seconds."""

    async def counted() -> tuple[dict, dict] | None:
        stats = await sagawire_cli(mongodb_url, "stats", "--machine", "order")
        sagas = stats["order"]["sagas"]
        if (sagas["running"], sagas["compensated"]) != (len(waiting), len(compensated)):
            return None
        listed = await sagawire_cli(
            mongodb_url,
            "sagas",
            "list",
            "--machine",
            "order",
            "--state",
            "deliver_order",
            "--status",
            "running",
            "--status",
            "compensating",
        )
        return stats, listed

    return await wait_until(counted, timeout=30, interval=1, what="the CLI's counts")


async def settled(reader, compensated: list[str], waiting: list[str], amqp_url: str) -> bool:
    """Every saga where the plan puts it: compensated, or waiting on a dead-lettered command."""
    for saga_id in compensated + waiting:
        response = await reader.get(f"/v1/sagas/{saga_id}")
        if response.status_code != 200:
            return False
        saga = response.json()
        if saga_id in compensated and saga["status"] != "compensated":
            return False
        if saga_id in waiting and (saga["status"], saga["state"]) != ("running", "deliver_order"):
            return False
    return await dead_lettered(amqp_url, DELIVERY_DLQ) >= len(waiting)


def log_in(page: MonitorBrowser, token: str, scope: str) -> None:
    page.until(lambda d: page.find("#login").is_displayed(), timeout=15, what="the token form")
    page.type("#token", token)
    page.click("#token-use")
    page.until(
        lambda d: page.text("#scope") == f"{scope} token",
        timeout=15,
        what=f"the {scope} scope in the header",
    )


def the_machine_matches_the_cli(page: MonitorBrowser, cli: dict, per_state: int) -> dict:
    """The order machine's figures on the page equal the CLI's (read from the page until they
    do: the gateway reuses latencies for a few seconds)."""
    wanted = cli["order"]

    def same(_) -> dict | None:
        shown = page.script(MACHINE_FIGURES, "order")
        if shown is None or shown["sagas"] != wanted["sagas"]:
            return None
        if shown["states"].get("deliver_order", {}).get("running") != per_state:
            return None
        if shown["badges"].get("deliver_order") != {"running": per_state}:
            return None  # the diagram is drawn after the figures
        return shown if shown["latency"] == wanted["step_latency_ms"] else None

    shown = page.until(
        same, timeout=30, what=f"the counts and latencies of the CLI: {wanted}, {per_state}"
    )
    assert shown["sampled"] == wanted["steps_sampled"]
    return shown


def finds_the_waiting_sagas(page: MonitorBrowser, waiting: list[str]) -> None:
    page.click("nav a[data-nav=sagas]")
    page.until(
        lambda d: page.shows("#saga-filters select[name=machine] option[value=order]"),
        timeout=15,
        what="the machine choices of the filters",
    )
    page.click("#saga-filters select[name=machine] option[value=order]")
    page.type("#saga-filters input[name=state]", "deliver_order")
    page.click("#saga-filters input[name=status][value=running]")
    page.click("#apply-filters")

    def listed(_) -> list[str] | None:
        ids = page.script(
            "return [...document.querySelectorAll('#saga-table tbody tr')]"
            ".map((row) => row.dataset.saga);"
        )
        return ids if "state=deliver_order" in page.driver.current_url else None

    ids = page.until(
        lambda d: (found := listed(d)) is not None and sorted(found) == sorted(waiting) and found,
        timeout=15,
        what=f"the waiting sagas {waiting} in the list",
    )
    assert page.text(".pager .range") == f"1\N{EN DASH}{len(waiting)} of {len(waiting)}", ids


def opens_the_saga(page: MonitorBrowser, saga_id: str) -> None:
    page.click(f"#saga-table tr[data-saga='{saga_id}'] a.saga-link")
    page.until(
        lambda d: (
            page.shows("div.saga[data-status=running]")
            and page.text("[data-fact=state]") == "deliver_order"
            and "delivery.deliver_order" in page.text("#pending-steps")
        ),
        timeout=15,
        what=f"saga {saga_id} waiting in deliver_order",
    )
    path = page.until(
        lambda d: page.script(SAGA_PATH), timeout=15, what="the saga's path on the diagram"
    )
    assert path["visited"] == ["execute_payment", "prepare_order", "deliver_order"], path
    assert path["current"] == ["deliver_order"], path
    assert "prepare_order->deliver_order" in path["taken"], path


def retry(page: MonitorBrowser, reason: str) -> None:
    page.click("#action-retry")
    page.until(
        lambda d: page.find("#confirm").get_attribute("open") is not None,
        timeout=5,
        what="the confirm dialog",
    )
    assert "Retry saga" in page.text("#confirm-title")
    page.type("#confirm-reason", reason)
    page.click("#confirm-ok")


def verdict(page: MonitorBrowser, outcome: str) -> str:
    page.until(
        lambda d: page.find("#verdict").get_attribute("data-outcome") == outcome,
        timeout=30,
        what=f"the verdict {outcome}",
    )
    return page.text("#verdict")


def retries_it_as_operator(page: MonitorBrowser, chosen: str) -> None:
    """Log in again with the operator token (the saga page comes back), Retry, and wait for the
    saga to succeed, its whole path on the diagram."""
    page.click("#change-token")
    log_in(page, OPERATOR, "operator")
    page.until(
        lambda d: page.text("[data-fact=state]") == "deliver_order",
        timeout=15,
        what="the saga page again",
    )
    retry(page, "delivery fixed")
    applied = verdict(page, "applied")
    # The saga as the daemon applied the retry: delivery may have answered already.
    assert re.search(rf"saga {chosen} is (running|succeeded)", applied), applied
    page.until(
        lambda d: (
            page.shows("div.saga[data-status=succeeded]")
            and "delivered" in page.script(SAGA_PATH)["visited"]
        ),
        timeout=60,
        what=f"saga {chosen} succeeded",
    )
    path = page.script(SAGA_PATH)
    assert path["current"] == [], path  # finished
    assert "deliver_order->delivered" in path["taken"], path
    assert page.text("[data-fact=state]") == "delivered"


def asks_no_token_without_auth(page: MonitorBrowser, url: str, chosen: str) -> None:
    page.driver.get(f"{url}/monitor/#/sagas?machine=order&status=succeeded")
    page.until(
        lambda d: (
            page.text("#scope") == "no authentication (--no-auth)"
            and page.script(
                "return [...document.querySelectorAll('#saga-table tbody tr')]"
                ".map((row) => row.dataset.saga);"
            )
            == [chosen]
        ),
        timeout=15,
        what="the succeeded saga, with no token asked",
    )
    assert not page.find("#login").is_displayed()


async def start_sagas(operator, saga_ids: list[str]) -> None:
    for saga_id in saga_ids:
        order = {"saga_id": saga_id, "data": example_order(saga_id)}
        started = await operator.post("/v1/machines/order/sagas", json=order)
        assert started.status_code == 202, started.text


@pytest.mark.timeout(300)
async def test_the_monitor_shows_the_clis_figures_and_retries_a_stuck_saga(
    clean_broker, database, processes: ProcessGroup, report, tmp_path
):
    required_programs()  # before anything starts: a missing browser fails at once
    began = time.monotonic()
    mongodb_url, _ = database
    daemon = processes.daemon(mongodb_url, machines=ORDER_MACHINE)
    services = [
        processes.service("payment", failure_rate=FAILURE_RATE),
        processes.service("stock", failure_rate=FAILURE_RATE),
        processes.service("delivery", failure_rate=FAILURE_RATE, broken=["deliver_order"]),
    ]
    gateway = start_gateway(processes, mongodb_url)
    open_gateway = start_gateway(processes, mongodb_url, auth=False)
    await wait_ready(daemon)
    for service in services:
        await wait_serving(service)
    await wait_gateway(gateway)
    await wait_gateway(open_gateway)

    compensated, waiting = planned_sagas(3)
    async with gateway.client(OPERATOR) as operator, gateway.client(READER) as reader:
        await start_sagas(operator, compensated + waiting)

        async def all_settled() -> bool:
            return await settled(reader, compensated, waiting, processes.amqp_url)

        await wait_until(
            all_settled, timeout=90, what="the planned outcomes", diagnose=processes.tails
        )
        cli, in_state = await the_cli_counts(mongodb_url, compensated, waiting)

        with chromium(tmp_path / "chromium") as driver:
            page = MonitorBrowser(driver, diagnose=processes.tails)
            # (1) The machine, with a read token: the CLI's figures.
            driver.get(f"{gateway.url}/")
            log_in(page, READER, "read")
            assert driver.current_url.startswith(f"{gateway.url}/monitor/")
            driver.get(f"{gateway.url}/monitor/#/machine/order")
            shown = the_machine_matches_the_cli(page, cli, in_state["total"])
            depth = await dead_lettered(processes.amqp_url, DELIVERY_DLQ)
            assert shown["dead_letters"][DELIVERY_DLQ] == depth, shown
            page.screenshot(SCREENSHOTS / "machine.png")

            # (2) The waiting sagas by filter; one of them opened; Retry refused to a reader.
            finds_the_waiting_sagas(page, waiting)
            page.screenshot(SCREENSHOTS / "sagas.png")
            chosen = waiting[0]
            opens_the_saga(page, chosen)
            retry(page, "a reader tries")
            refused = verdict(page, "refused")
            assert page.find("#verdict").get_attribute("data-http") == "403", refused
            assert "403 Forbidden" in refused, refused
            assert "does not allow operator requests" in refused, refused

            # Delivery fixed; the operator retries the saga from its page and sees it succeed.
            services[2].stop()
            await wait_serving(processes.service("delivery", failure_rate=0.0))
            retries_it_as_operator(page, chosen)
            page.screenshot(SCREENSHOTS / "saga.png")
            asks_no_token_without_auth(page, open_gateway.url, chosen)

        saga = (await reader.get(f"/v1/sagas/{chosen}")).json()
        retried = [h for h in saga["history"] if h["event"] == "retry_requested"]
        assert [(h["by"], h["detail"]) for h in retried] == [("api (operator)", "delivery fixed")]
    report(
        f"monitor: {len(compensated)} compensated and {len(waiting)} waiting sagas shown as the "
        f"CLI counts them; {chosen} retried from its page to success "
        f"({time.monotonic() - began:.1f} s in all)"
    )
