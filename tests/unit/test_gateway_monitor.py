"""The gateway's flow monitor without servers: its page and files, the routes it reads (stats,
diagram, a saga's path, the caller's scope) on a stand-in service, and Graphviz as a
subprocess that may be missing, fail or hang."""

from __future__ import annotations

import re
import types
from pathlib import Path

import httpx
import pytest
from decide_support import ORDER, machine, order_at_ship
from fastapi import FastAPI
from structlog.testing import capture_logs

from orchestrator.gateway.app import create_app
from orchestrator.gateway.auth import Tokens
from orchestrator.gateway.graphviz import Diagrams, DiagramUnavailable, dot_to_svg
from orchestrator.gateway.monitor_page import MONITOR_FILES, mount_monitor
from orchestrator.gateway.service import ApiProblem, MachineView

OPERATOR = "op-0123456789abcdef"
READER = "rd-0123456789abcdef"
SVG = '<svg xmlns="http://www.w3.org/2000/svg"><g class="node"><title>pay</title></g></svg>'


class Queries:
    def __init__(self) -> None:
        self.latency_reads = 0
        self.counted = []

    async def counts_by_state(self, name):
        return {"ship": {"running": 2}, "pay": {"compensated": 1}}

    async def count(self, where):
        self.counted.append(where)
        return 1

    async def step_latencies(self, *, sample, machine):
        self.latency_reads += 1
        return {machine: [0.010, 0.020, 0.030]}


class Service:
    """The parts of `SagaService` the monitor's routes use."""

    def __init__(self) -> None:
        self.definition = machine(ORDER)
        self.store = types.SimpleNamespace(queries=Queries())
        self.saga_ = order_at_ship(self.definition)

    async def machines(self):
        return [await self.machine("order")]

    async def machine(self, name):
        if name != "order":
            raise ApiProblem(404, f"no machine {name!r}")
        counts = {"running": 2, "compensated": 1}
        return MachineView(name="order", versions=[self.definition], counts=counts, pause=None)

    async def saga(self, saga_id):
        if saga_id != self.saga_.saga_id:
            raise ApiProblem(404, f"no saga {saga_id!r}")
        return self.saga_

    async def dead_letter_depths(self, queues):
        return {queue: 3 if queue == "sagawire.delivery.commands.dlq" else None for queue in queues}


def fake_dot(folder: Path, body: str) -> Path:
    """An executable standing in for `dot`: `body` is its shell script."""
    script = folder / "dot"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def drawing_dot(tmp_path):
    calls = tmp_path / "calls"
    return fake_dot(tmp_path, f"cat >/dev/null\necho run >> {calls}\necho '{SVG}'"), calls


def client(service=None, *, dot="dot", tokens=None) -> httpx.AsyncClient:
    """The gateway's app in this process, called over ASGI."""
    tokens = tokens or Tokens.parse(f"{OPERATOR}:operator,{READER}:read")
    app = create_app(service or Service(), tokens, diagrams=Diagrams(executable=str(dot)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


def reading(token=READER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the page -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_root_and_the_bare_path_lead_to_the_page():
    async with client() as http:
        assert (await http.get("/")).headers["location"] == "/monitor/"
        bare = await http.get("/monitor")
        assert bare.status_code in (301, 307)
        assert bare.headers["location"].endswith("/monitor/")


@pytest.mark.asyncio
async def test_the_page_is_served_without_a_token_and_allows_only_its_own_origin():
    async with client() as http:
        page = await http.get("/monitor/")
        script = await http.get("/monitor/app.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }


def test_no_monitor_file_loads_anything_from_elsewhere():
    found = {
        url
        for path in MONITOR_FILES.iterdir()
        for url in re.findall(r"https?://[^\s\"'`)]+", path.read_text())
    }
    assert found <= {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched


def test_every_script_module_the_page_imports_is_shipped():
    imports = set()
    for path in MONITOR_FILES.glob("*.js"):
        imports |= set(re.findall(r'from "\./([\w.]+)"', path.read_text()))
    assert imports
    assert imports <= {path.name for path in MONITOR_FILES.glob("*.js")}


def test_the_scripts_never_write_html():
    # Saga data and error details are foreign input: the page puts them in as text only.
    writes = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(")
    offending = [
        f"{path.name}: {line.strip()}"
        for path in sorted(MONITOR_FILES.glob("*.js"))
        for line in path.read_text().splitlines()
        if writes.search(line)
    ]
    assert offending == []


# -- the routes it reads ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_stats_of_a_machine():
    service = Service()
    async with client(service) as http:
        stats = await http.get("/v1/machines/order/stats?stuck_after=30", headers=reading())
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["counts"] == {
        "running": 2,
        "compensating": 0,
        "succeeded": 0,
        "compensated": 1,
        "failed": 0,
        "aborted": 0,
    }
    assert body["states"] == {"ship": {"running": 2}, "pay": {"compensated": 1}}
    assert (body["stuck"], body["stuck_after"]) == (1, 30.0)
    assert body["step_latency_ms"] == {"p50": 20.0, "p95": 30.0, "p99": 30.0}
    assert body["steps_sampled"] == 3
    assert body["dead_letters"] == {
        "sagawire.delivery.commands.dlq": 3,
        "sagawire.delivery.replies.dlq": None,
        "sagawire.payment.commands.dlq": None,
        "sagawire.payment.replies.dlq": None,
        "sagawire.stock.commands.dlq": None,
        "sagawire.stock.replies.dlq": None,
    }
    (stuck,) = service.store.queries.counted
    assert stuck.machine == "order"
    assert stuck.stuck_before is not None


@pytest.mark.asyncio
async def test_latencies_are_read_once_for_a_few_seconds_counts_every_time():
    service = Service()
    async with client(service) as http:
        for _ in range(3):
            assert (
                await http.get("/v1/machines/order/stats", headers=reading())
            ).status_code == 200
    assert service.store.queries.latency_reads == 1
    assert len(service.store.queries.counted) == 3


@pytest.mark.asyncio
async def test_the_stats_need_a_token_and_a_known_machine():
    async with client() as http:
        assert (await http.get("/v1/machines/order/stats")).status_code == 401
        missing = await http.get("/v1/machines/nope/stats", headers=reading())
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]


@pytest.mark.asyncio
async def test_the_diagram_is_drawn_once_per_machine_version(drawing_dot):
    dot, calls = drawing_dot
    async with client(dot=dot) as http:
        first = await http.get("/v1/machines/order/diagram.svg", headers=reading())
        again = await http.get("/v1/machines/order/diagram.svg?version=1", headers=reading())
        unknown = await http.get("/v1/machines/order/diagram.svg?version=7", headers=reading())
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/svg+xml"
    assert "default-src 'none'" in first.headers["content-security-policy"]
    assert first.text.strip() == SVG
    assert again.text == first.text
    assert calls.read_text().count("run") == 1
    assert unknown.status_code == 404
    assert "has 1" in unknown.json()["detail"]


@pytest.mark.asyncio
async def test_without_graphviz_the_diagram_is_503_with_the_reason(tmp_path):
    async with client(dot=tmp_path / "no-such-dot") as http:
        answer = await http.get("/v1/machines/order/diagram.svg", headers=reading())
    assert answer.status_code == 503
    assert "Graphviz is not installed" in answer.json()["detail"]
    assert "apt-get install graphviz" in answer.json()["detail"]


@pytest.mark.asyncio
async def test_a_sagas_path():
    service = Service()
    async with client(service) as http:
        answer = await http.get(f"/v1/sagas/{service.saga_.saga_id}/path", headers=reading())
        missing = await http.get("/v1/sagas/nope/path", headers=reading())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["visited"] == ["pay", "reserve", "ship"]
    assert body["edges"][1] == {"source": "pay", "target": "reserve", "label": "payment_executed"}
    assert (body["current"], body["complete"]) == ("ship", True)
    assert missing.status_code == 404


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("tokens", "token", "expected"),
    [
        (None, READER, {"auth": True, "scope": "read"}),
        (None, OPERATOR, {"auth": True, "scope": "operator"}),
        (Tokens(open=True), None, {"auth": False, "scope": "operator"}),
    ],
)
async def test_the_caller_learns_its_scope(tokens, token, expected):
    async with client(tokens=tokens) as http:
        headers = reading(token) if token else {}
        assert (await http.get("/v1/whoami", headers=headers)).json() == expected


@pytest.mark.asyncio
async def test_who_am_i_needs_a_known_token():
    async with client() as http:
        assert (
            await http.get("/v1/whoami", headers=reading("unknown-0123456789"))
        ).status_code == 401


# -- Graphviz as a subprocess -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failing_dot_says_why(tmp_path):
    broken = fake_dot(tmp_path, "cat >/dev/null\necho 'syntax error in line 3' >&2\nexit 1")
    with pytest.raises(DiagramUnavailable, match=r"failed \(exit 1\): syntax error in line 3"):
        await dot_to_svg("digraph {}", executable=str(broken))


@pytest.mark.asyncio
async def test_a_dot_that_hangs_is_stopped(tmp_path):
    hanging = fake_dot(tmp_path, "exec sleep 30")
    with pytest.raises(DiagramUnavailable, match=r"did not finish within 0\.2 s"):
        await dot_to_svg("digraph {}", executable=str(hanging), time_limit=0.2)


@pytest.mark.asyncio
async def test_a_missing_dot_is_named(tmp_path):
    with pytest.raises(DiagramUnavailable, match="not installed"):
        await dot_to_svg("digraph {}", executable=str(tmp_path / "dot"))


@pytest.mark.asyncio
async def test_without_its_files_the_page_is_missing_and_the_api_stays(tmp_path):
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    with capture_logs() as logs:
        mount_monitor(app, tmp_path / "not-installed")
    assert [entry["event"] for entry in logs] == ["monitor_files_missing"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        page = await http.get("/monitor/")
        assert page.status_code == 404
        assert "not installed" in page.json()["detail"]
        assert (await http.get("/healthz")).status_code == 200
