"""Machine diagrams: every state, transition, compensation and timeout is drawn."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import orchestrator.cli.machines_cmd  # noqa: F401 - registers `machines`
from orchestrator.cli.app import app
from orchestrator.core.conditions import Condition
from orchestrator.core.definition import MachineDefinition
from orchestrator.core.diagram import describe_condition, dot, duration, mermaid, render
from orchestrator.core.machines import load_machines

MACHINES = Path(__file__).resolve().parents[2] / "machines"

CHOOSY = MachineDefinition.model_validate(
    {
        "machine": "choosy",
        "version": 2,
        "initial": "route",
        "states": {
            "route": {
                "choice": [
                    {"when": {"path": "$.total", "gt": 100}, "goto": "both"},
                    {
                        "when": {
                            "any": [
                                {"path": "$.vip", "exists": True},
                                {"path": "$.tier", "in": ["gold"]},
                            ]
                        },
                        "goto": "done",
                    },
                ],
                "default": "pay",
            },
            "pay": {
                "command": {"service": "payment", "name": "pay"},
                "timeout": 90,
                "on": {"paid": "done"},
                "on_timeout": "failed",
            },
            "both": {
                "parallel": {
                    "card": {
                        "command": {"service": "payment", "name": "hold"},
                        "compensation": {"service": "payment", "name": "release"},
                        "on": {"held": "done"},
                    },
                    "stock": {
                        "command": {"service": "stock", "name": "reserve"},
                        "on": {"ok": "done", "none": "fail"},
                    },
                },
                "then": "done",
            },
            "done": {"final": "succeeded", "label": "DONE"},
            "failed": {"final": "failed"},
        },
    }
)


def order() -> MachineDefinition:
    return load_machines(MACHINES).latest("order")


def test_mermaid_draws_every_transition_of_the_order_machine() -> None:
    text = mermaid(order())
    assert text.startswith("stateDiagram-v2\n")
    edges = set(re.findall(r"^    (\S+) --> (\S+)(?: : (.*))?$", text, flags=re.MULTILINE))
    assert edges == {
        ("[*]", "execute_payment", ""),
        ("execute_payment", "prepare_order", "payment_executed"),
        ("execute_payment", "compensate", "payment_failed"),
        ("execute_payment", "compensate", "timed out"),
        ("prepare_order", "deliver_order", "order_prepared"),
        ("prepare_order", "compensate", "out_of_stock"),
        ("prepare_order", "compensate", "timed out"),
        ("deliver_order", "delivered", "order_delivered"),
        ("deliver_order", "compensate", "delivery_failed"),
        ("deliver_order", "compensate", "timed out"),
        ("delivered", "[*]", "succeeded"),
        ("compensate", "[*]", "compensated"),
    }
    assert "execute_payment : payment.execute_payment, timeout 30s x3" in text
    assert "execute_payment : undo payment.refund_payment" in text
    assert "deliver_order : delivery.deliver_order, timeout 2m x5" in text
    assert "compensate : compensations of the steps done, newest first" in text


def test_choices_parallel_states_and_conditions() -> None:
    text = mermaid(CHOOSY)
    assert "    state route <<choice>>" in text
    assert "    route --> both : $.total > 100" in text
    assert '    route --> done : $.vip exists or $.tier in ["gold"]' in text
    assert "    route --> pay : otherwise" in text
    assert "    both : card - payment.hold, timeout 30s x3" in text
    assert "    both : card - undo payment.release" in text
    assert "    both --> compensate : a branch failed" in text
    assert "    pay --> failed : timed out" in text
    assert "pay : payment.pay, timeout 90s x3" in text


def test_dot_is_a_graph_with_the_same_edges() -> None:
    text = dot(CHOOSY)
    assert text.startswith("digraph choosy_v2 {")
    assert text.rstrip().endswith("}")
    assert "  start -> route;" in text
    assert '  route [shape=diamond, label="route"];' in text
    assert '  route -> both [label="$.total > 100"];' in text
    assert '  route -> done [label="$.vip exists or $.tier in [\\"gold\\"]"];' in text
    assert '  done [shape=doubleoctagon, label="done\\nDONE\\nends succeeded"];' in text
    assert "compensate [shape=octagon" in text


def test_condition_and_duration_wording() -> None:
    nested = Condition.model_validate(
        {
            "all": [
                {"not": {"path": "$.a", "equals": None}},
                {"any": [{"path": "$.b", "lt": 2}, {"path": "$.c", "exists": False}]},
            ]
        }
    )
    assert describe_condition(nested) == "not ($.a == null) and ($.b < 2 or $.c is missing)"
    assert [duration(s) for s in (30, 90, 120, 3600, 0.5)] == ["30s", "90s", "2m", "1h", "0.5s"]
    with pytest.raises(ValueError, match="format must be one of mermaid, dot"):
        render(CHOOSY, "svg")


def test_machines_commands() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["machines", "list", "--machines", str(MACHINES), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {(row["machine"], row["version"]): row for row in json.loads(listed.stdout)}
    assert rows[("order", 1)]["services"] == ["delivery", "payment", "stock"]
    assert rows[("order", 1)]["hash"] == order().content_hash()

    shown = runner.invoke(app, ["machines", "show", "order", "--machines", str(MACHINES), "--json"])
    assert shown.exit_code == 0, shown.output
    assert MachineDefinition.model_validate(json.loads(shown.stdout)["definition"]) == order()

    drawn = runner.invoke(app, ["machines", "diagram", "order", "--machines", str(MACHINES)])
    assert (drawn.exit_code, drawn.stdout) == (0, mermaid(order()))

    unknown = runner.invoke(app, ["machines", "show", "ordr", "--machines", str(MACHINES)])
    assert unknown.exit_code == 1
    assert "unknown machine 'ordr' (did you mean 'order'?)" in unknown.stderr
    no_version = runner.invoke(
        app, ["machines", "show", "order", "--version", "9", "--machines", str(MACHINES)]
    )
    assert no_version.exit_code == 1
    assert "has no version 9; known versions: 1" in no_version.stderr
    bad_format = runner.invoke(
        app, ["machines", "diagram", "order", "--format", "svg", "--machines", str(MACHINES)]
    )
    assert bad_format.exit_code == 2
    assert "--format 'svg': use one of mermaid, dot" in bad_format.stderr
