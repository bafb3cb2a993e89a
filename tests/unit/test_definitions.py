"""Machine definitions: the shipped machines load, and broken ones are rejected with a line that
names the file, machine, state and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.core.definition import (
    MachineDefinition,
    ParallelState,
    TaskState,
    render_template,
)
from orchestrator.core.machines import (
    MachineRegistry,
    UnknownMachine,
    load_machine_file,
    load_machines,
)
from orchestrator.core.validation import validate_definition
from orchestrator.core.yaml_source import load_documents
from orchestrator.errors import DefinitionError

MACHINES = Path(__file__).resolve().parents[2] / "machines"

# A sound machine; each broken case below changes one thing in it.
GOOD = """
machine: shop
version: 1
initial: pay
states:
  pay:
    command: {service: payment, name: pay, input: {order_id: $.order_id}}
    compensation: {service: payment, name: refund, input: {order_id: $.order_id}}
    timeout: 30s
    retry: {attempts: 3, backoff: 1s}
    on:
      paid: {goto: ship, save_as: payment}
      declined: compensate
  ship:
    command: {service: delivery, name: ship}
    on: {shipped: done, lost: compensate}
  done: {final: succeeded}
"""


def write(folder: Path, text: str, name: str = "shop.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_machines(path)
    assert caught.value.problems
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def the_line(problems: list[str], *parts: str) -> str:
    """The one problem line holding every part; fails showing all the lines otherwise."""
    found = [line for line in problems if all(part in line for part in parts)]
    assert found, f"no problem with {parts!r} in:\n" + "\n".join(problems)
    return found[0]


# -- the shipped machines ---------------------------------------------------------------------


def test_shipped_machines_load_and_validate() -> None:
    registry = load_machines(MACHINES)
    assert {"create_order", "order"} <= set(registry.names())
    for definition in registry:
        assert validate_definition(definition, "shipped") == []
        assert registry.source(*definition.key).startswith(str(MACHINES))


def test_order_machine_shape() -> None:
    [order] = load_machine_file(MACHINES / "order.yaml")
    assert order.key == ("order", 1)
    assert order.initial == "execute_payment"
    pay = order.states["execute_payment"]
    assert isinstance(pay, TaskState)
    assert set(pay.on) == {"payment_executed", "payment_failed"}
    assert pay.on["payment_executed"].save_as == "payment"
    assert pay.on["payment_failed"].goto == "compensate"
    assert pay.timeout == 30.0
    assert pay.retry.attempts == 3
    assert pay.label == "PAYMENT_PENDING"
    assert order.services() == {"payment", "stock", "delivery"}
    # The refund's payment id is optional: null when the payment never answered.
    assert pay.compensation is not None
    assert render_template(pay.compensation.input, {"order_id": "o-1"}) == {
        "order_id": "o-1",
        "payment_id": None,
    }
    data = {"order_id": "o-1", "payment": {"payment_id": "p-9"}}
    assert render_template(pay.compensation.input, data)["payment_id"] == "p-9"
    assert order.states["delivered"].kind == "final"


def test_ftgo_create_order_shape() -> None:
    [saga] = load_machine_file(MACHINES / "ftgo_create_order.yaml")
    assert saga.key == ("create_order", 1)
    path, state = [], saga.initial
    while isinstance(task := saga.states[state], TaskState):
        path.append((task.command.service, task.command.name))
        state = next(t.goto for t in task.on.values() if t.goto != "compensate")
    assert path == [
        ("consumer", "verify_consumer"),
        ("kitchen", "create_ticket"),
        ("accounting", "authorize_card"),
        ("kitchen", "approve_ticket"),
        ("order", "approve_order"),
    ]
    assert state == "approved"
    compensations = {
        name: (s.compensation.service, s.compensation.name)
        for name, s in saga.states.items()
        if isinstance(s, TaskState) and s.compensation
    }
    assert compensations == {
        "verify_consumer": ("order", "reject_order"),
        "create_ticket": ("kitchen", "reject_ticket"),
    }


def test_good_definition_loads(tmp_path: Path) -> None:
    registry = load_machines(write(tmp_path, GOOD))
    assert [d.key for d in registry] == [("shop", 1)]


# -- broken definitions -----------------------------------------------------------------------

BROKEN = {
    "dangling target": (
        ("on: {shipped: done, lost: compensate}", "on: {shipped: dnoe, lost: compensate}"),
        (
            "state 'ship'",
            "field 'on.shipped.goto'",
            "unknown target state 'dnoe'",
            "did you mean 'done'",
            "known states: pay, ship, done",
        ),
    ),
    "dangling on_timeout": (
        ("on: {shipped: done, lost: compensate}", "on: {shipped: done}\n    on_timeout: compensat"),
        ("state 'ship'", "field 'on_timeout'", "did you mean 'compensate'"),
    ),
    "unreachable state": (
        ("  done: {final: succeeded}", "  done: {final: succeeded}\n  orphan: {final: failed}"),
        ("state 'orphan'", "field 'states.orphan'", "unreachable", "initial state 'pay'"),
    ),
    "task with empty on": (
        ("on: {shipped: done, lost: compensate}", "on: {}"),
        ("state 'ship'", "field 'on'", "no events"),
    ),
    "cycle with no exit": (
        (
            "on: {shipped: done, lost: compensate}",
            (
                "on: {shipped: wait}\n    on_timeout: wait\n"
                "  wait:\n    command: {service: delivery, name: track}\n"
                "    on: {moved: ship}\n    on_timeout: ship"
            ),
        ),
        ("state 'wait'", "field 'states.wait'", "no way out", "ship, wait"),
    ),
    "bad duration": (
        ("timeout: 30s", "timeout: 3x"),
        ("state 'pay'", "field 'timeout'", "invalid duration '3x'", "e.g. '30s'"),
    ),
    "bad duration in retry": (
        ("backoff: 1s", "backoff: soon"),
        ("state 'pay'", "field 'retry.backoff'", "invalid duration 'soon'"),
    ),
    "retry attempts out of range": (
        ("attempts: 3", "attempts: 0"),
        ("state 'pay'", "field 'retry.attempts'", "greater than or equal to 1", "got 0"),
    ),
    "bad path with an empty part": (
        (
            "input: {order_id: $.order_id}}\n    compensation",
            "input: {order_id: $.a..b}}\n    compensation",
        ),
        ("state 'pay'", "field 'command.input'", "invalid path '$.a..b'"),
    ),
    "bad save_as": (
        ("save_as: payment", 'save_as: "$.payment[0]"'),
        ("state 'pay'", "field 'on.paid.save_as'", "invalid save_as '$.payment[0]'"),
    ),
    "unknown service in compensation": (
        ("compensation: {service: payment,", "compensation: {service: paymnt,"),
        (
            "state 'pay'",
            "field 'compensation.service'",
            "unknown service 'paymnt' in compensation",
            "did you mean 'payment'",
            "services: delivery, payment",
        ),
    ),
    "unknown initial state": (
        ("initial: pay", "initial: paay"),
        ("machine 'shop' v1: field 'initial'", "unknown state 'paay'", "did you mean 'pay'"),
    ),
    "missing initial": (
        ("initial: pay\n", ""),
        ("machine 'shop' v1: field 'initial'", "required field is missing"),
    ),
    "unknown state kind": (
        (
            "    command: {service: delivery, name: ship}",
            "    comand: {service: delivery, name: ship}",
        ),
        (
            "state 'ship'",
            "field 'comand'",
            "did you mean 'command'",
            "a state needs 'command' (task), 'choice', 'parallel' or 'final'",
        ),
    ),
    "misspelt field": (
        ("timeout: 30s", "timout: 30s"),
        ("state 'pay'", "field 'timout'", "unknown field 'timout'", "did you mean 'timeout'"),
    ),
    "misspelt goto": (
        ("paid: {goto: ship", "paid: {gotoo: ship"),
        ("state 'pay'", "field 'on.paid.gotoo'", "did you mean 'goto'"),
    ),
    "bad final outcome": (
        ("done: {final: succeeded}", "done: {final: done}"),
        ("state 'done'", "field 'final'", "'succeeded', 'compensated' or 'failed'", "got 'done'"),
    ),
    "no final state": (
        (
            "done: {final: succeeded}",
            "done: {command: {service: delivery, name: x}, on: {ok: compensate}}",
        ),
        ("machine 'shop' v1: field 'states'", "no final state"),
    ),
    "bad state name": (
        ("  done: {final: succeeded}", "  done: {final: succeeded}\n  'bad name': {final: failed}"),
        ("state 'bad name'", "field 'name'", "invalid name 'bad name'"),
    ),
    "reserved state name": (
        ("  done: {final: succeeded}", "  done: {final: succeeded}\n  compensate: {final: failed}"),
        ("machine 'shop' v1", "'compensate' is a reserved target"),
    ),
}


@pytest.mark.parametrize(("change", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_definition_is_rejected(
    tmp_path: Path, change: tuple[str, str], expected: tuple[str, ...]
) -> None:
    old, new = change
    assert old in GOOD, "the case must change the good definition"
    path = write(tmp_path, GOOD.replace(old, new, 1))
    line = the_line(problems_of(tmp_path), *expected)
    assert line.startswith(f"{path}: machine 'shop' v1: ")


def test_choice_only_cycle_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        machine: shop
        version: 1
        initial: route
        states:
          route:
            choice:
              - when: {path: $.express, equals: true}
                goto: recheck
            default: ship
          recheck:
            choice:
              - when: {path: $.total, gt: 100}
                goto: route
            default: route
          ship:
            command: {service: delivery, name: ship}
            on: {shipped: done}
          done: {final: succeeded}
        """,
    )
    problems = problems_of(path)
    line = the_line(problems, "state 'route'", "field 'choice[0].goto'", "route, recheck")
    assert "cycle with no task in between" in line
    assert line.startswith(f"{path}: machine 'shop' v1: ")
    assert len(problems) == 1, "the cycle has a way out, so only the cycle is reported"


def test_choice_that_targets_itself_is_a_cycle(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  done: {final: succeeded}",
        "  done: {final: succeeded}\n"
        "  spin:\n    choice: [{when: {path: $.x, exists: true}, goto: done}]\n    default: spin",
    ).replace("lost: compensate", "lost: spin")
    the_line(problems_of(write(tmp_path, text)), "state 'spin'", "field 'default'", "cycle")


def test_path_without_dollar_in_a_condition_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("initial: pay", "initial: route").replace(
        "  done: {final: succeeded}",
        "  done: {final: succeeded}\n"
        "  route:\n"
        "    choice: [{when: {all: [{path: order_id, exists: true}]}, goto: pay}]\n"
        "    default: pay",
    )
    path = write(tmp_path, text)
    line = the_line(
        problems_of(path),
        "state 'route'",
        "field 'choice[0].when.all[0]'",
        "invalid path 'order_id'",
    )
    assert line.startswith(f"{path}: ")


def with_route(condition: str) -> str:
    """GOOD with a choice state first whose one rule tests `condition`."""
    return GOOD.replace("initial: pay", "initial: route").replace(
        "  done: {final: succeeded}",
        "  done: {final: succeeded}\n"
        "  route:\n"
        f"    choice: [{{when: {condition}, goto: ship}}]\n"
        "    default: pay",
    )


@pytest.mark.parametrize(
    ("condition", "field", "message"),
    [
        (
            "{path: $.total, gt: '5000'}",
            "choice[0].when.gt",
            (
                "gt: '5000' is a string; gt/gte/lt/lte compare numbers (or dates written "
                "'YYYY-MM-DD'); write gt: 5000"
            ),
        ),
        ('{path: $.total, lte: "12.5"}', "choice[0].when.lte", "write lte: 12.5"),
        ("{path: $.total, gte: high}", "choice[0].when.gte", "gte: 'high' is a string;"),
        ("{path: $.total, lt: true}", "choice[0].when.lt", "lt: true is a boolean;"),
        ("{path: $.total, gt: null}", "choice[0].when.gt", "gt: null compares nothing;"),
        ("{path: $.total, gt: [1]}", "choice[0].when.gt", "gt: [1] is a list;"),
        ("{path: $.day, gt: 2024-01-01T10:00:00Z}", "choice[0].when.gt", "is a date-time;"),
        (
            "{any: [{path: $.total, gt: 1}, {not: {path: $.total, lt: '9'}}]}",
            "choice[0].when.any[1].not.lt",
            "lt: '9' is a string;",
        ),
        ("{path: $.total, in: null}", "choice[0].when", "in: null is not a list"),
    ],
)
def test_ordering_literal_that_is_not_a_number_is_rejected(
    tmp_path: Path, condition: str, field: str, message: str
) -> None:
    path = write(tmp_path, with_route(condition))
    line = the_line(problems_of(path), "state 'route'", f"field '{field}': ", message)
    assert line.startswith(f"{path}: machine 'shop' v1: ")


@pytest.mark.parametrize(
    "condition",
    [
        "{path: $.total, gt: 5000}",
        "{path: $.total, lte: -0.5}",
        "{path: $.day, gte: '2024-01-01'}",
        "{path: $.day, lt: 2024-01-01}",  # an unquoted YAML date is the same date
        "{path: $.status, equals: '5000'}",
        "{path: $.total, in: [1, 2, 3]}",
    ],
)
def test_number_and_date_literals_load(tmp_path: Path, condition: str) -> None:
    registry = load_machines(write(tmp_path, with_route(condition)))
    assert [d.key for d in registry] == [("shop", 1)]


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("gtr", "gt"),
        ("gto", "gt"),  # not the `goto` of a transition: inside `when` only conditions count
        ("gte_", "gte"),
        ("greater_than", "gt"),
        ("Greater-Than-Or-Equal", "gte"),
        (">=", "gte"),
        ("less_than", "lt"),
        ("lte_", "lte"),
        ("equal", "equals"),
        ("eq", "equals"),
        ("not_equal", "not_equals"),
        ("ne", "not_equals"),
        ("exist", "exists"),
        ("one_of", "in"),
        ("pth", "path"),
    ],
)
def test_misspelt_condition_key_suggests_the_operator(tmp_path: Path, key: str, meant: str) -> None:
    path = write(tmp_path, with_route(f"{{path: $.total, '{key}': 1}}"))
    line = the_line(
        problems_of(path),
        "state 'route'",
        "field 'choice[0].when'",
        f"unknown field '{key}' (did you mean '{meant}'?)",
        "a condition takes 'path' and one of equals, not_equals, gt, gte, lt, lte, exists, in",
    )
    assert line.startswith(f"{path}: machine 'shop' v1: ")


@pytest.mark.parametrize(("key", "meant"), [("and", "all"), ("or", "any"), ("nott", "not")])
def test_misspelt_combinator_suggests_the_combinator(tmp_path: Path, key: str, meant: str) -> None:
    text = with_route(f"{{{key}: [{{path: $.total, gt: 1}}]}}")
    the_line(
        problems_of(write(tmp_path, text)),
        "field 'choice[0].when'",
        f"unknown field '{key}' (did you mean '{meant}'?)",
    )


def test_unknown_condition_key_with_nothing_close_lists_the_keys(tmp_path: Path) -> None:
    path = write(tmp_path, with_route("{path: $.total, matches: 'a.*'}"))
    line = the_line(problems_of(path), "field 'choice[0].when'", "unknown field 'matches'; ")
    assert "did you mean" not in line


def test_unknown_service_in_a_parallel_branch_compensation(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  done: {final: succeeded}",
        """  done: {final: succeeded}
  both:
    parallel:
      notify:
        command: {service: mail, name: send}
        compensation: {service: sms, name: unsend}
        on: {sent: done}
    then: done""",
    ).replace("lost: compensate", "lost: both")
    the_line(
        problems_of(write(tmp_path, text)),
        "state 'both'",
        "field 'parallel.notify.compensation.service'",
        "unknown service 'sms'",
    )


def test_duplicate_state_names_name_the_line(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  done: {final: succeeded}", "  done: {final: succeeded}\n  pay: {final: failed}"
    )
    path = write(tmp_path, text)
    problems = problems_of(path)
    line = the_line(problems, str(path), "duplicate key 'pay'")
    lines = text.splitlines()
    assert f"line {lines.index('  pay: {final: failed}') + 1}:" in line
    assert f"first defined on line {lines.index('  pay:') + 1}" in line


def test_duplicate_machine_version_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, GOOD, "b.yml")
    line = the_line(problems_of(tmp_path), "machine 'shop' v1", "field 'version'")
    assert str(first) in line
    assert str(second) in line


def test_duplicate_version_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "---\n" + GOOD)
    the_line(problems_of(path), f"{path}: machine 'shop' v1", f"defined twice in {path}")


def test_on_is_a_key_not_a_boolean(tmp_path: Path) -> None:
    text = GOOD.replace("on: {shipped: done, lost: compensate}", "on: {yes: done, no: compensate}")
    [definition] = load_machine_file(write(tmp_path, text))
    ship = definition.states["ship"]
    assert isinstance(ship, TaskState)
    assert set(ship.on) == {"yes", "no"}
    assert definition.snapshot()["states"]["ship"]["on"]["yes"] == {"goto": "done"}


def test_all_problems_of_all_files_are_collected(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("timeout: 30s", "timeout: 3x"), "a.yaml")
    write(
        tmp_path,
        GOOD.replace("version: 1", "version: 2").replace("initial: pay", "initial: x"),
        "b.yaml",
    )
    write(tmp_path, "machine: [unclosed\n", "c.yaml")
    write(tmp_path, GOOD.replace("version: 1", "version: 3"), "d.yaml")
    write(tmp_path, "not: machine", "notes.txt")
    problems = problems_of(tmp_path)
    the_line(problems, "a.yaml: machine 'shop' v1: state 'pay': field 'timeout'")
    the_line(problems, "b.yaml: machine 'shop' v2: field 'initial'")
    the_line(problems, "c.yaml: line 2:")
    assert not [line for line in problems if "d.yaml" in line or "notes.txt" in line]


def test_several_versions_in_one_file(tmp_path: Path) -> None:
    v2 = GOOD.replace("version: 1", "version: 2").replace("timeout: 30s", "timeout: 1m")
    path = write(tmp_path, GOOD + "---\n" + v2)
    assert [d.version for d in load_machine_file(path)] == [1, 2]
    registry = load_machines(path)
    assert registry.latest("shop").version == 2
    assert registry.get("shop", 1).states["pay"] != registry.get("shop", 2).states["pay"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- 1\n- 2\n", "document 1: expected a mapping"),
        ("just text\n", "got str"),
        ("# only a comment\n", "no machine definition in this file"),
        ("", "no machine definition in this file"),
        ("machine: shop\nversion: 1\n  initial: pay\n", "line 3:"),
    ],
)
def test_file_that_is_not_a_machine(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    the_line(problems_of(path), str(path), expected)
    with pytest.raises(DefinitionError):
        load_machine_file(path)


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    the_line(problems_of(tmp_path), str(tmp_path), "no machine definitions (*.yaml, *.yml)")
    the_line(problems_of(tmp_path / "nope"), "nope", "no such file or folder")


# -- the registry -----------------------------------------------------------------------------


def _shop(version: int) -> MachineDefinition:
    [data] = load_documents(GOOD)
    data["version"] = version
    return MachineDefinition.model_validate(data)


def test_registry_lookups() -> None:
    registry = MachineRegistry([_shop(2), _shop(1)])
    assert registry.names() == ["shop"]
    assert [d.version for d in registry] == [1, 2]
    assert len(registry) == 2
    assert registry.get("shop", 1).version == 1
    assert registry.latest("shop").version == 2
    assert registry.find("shop") is registry.latest("shop")
    assert registry.find("shop", 1) is registry.get("shop", 1)
    assert registry.find("shop", 9) is None
    assert registry.find("shipping") is None
    assert "shop" in registry
    assert ("shop", 2) in registry
    assert ("shop", 3) not in registry
    assert "order" not in registry
    assert registry.source("shop", 1) == "<definitions>"
    assert "shop v1" in repr(registry)


def test_registry_errors_name_what_is_known() -> None:
    registry = MachineRegistry([_shop(1), _shop(2)])
    with pytest.raises(UnknownMachine) as caught:
        registry.get("shopp", 1)
    assert isinstance(caught.value, KeyError)
    assert (
        str(caught.value) == "unknown machine 'shopp' (did you mean 'shop'?); known machines: shop"
    )
    with pytest.raises(KeyError, match="machine 'shop' has no version 7; known versions: 1, 2"):
        registry.get("shop", 7)
    with pytest.raises(UnknownMachine, match="known machines: none"):
        MachineRegistry().latest("shop")


def test_registry_rejects_duplicates_and_unsound_definitions() -> None:
    with pytest.raises(DefinitionError, match="version 1 is defined twice"):
        MachineRegistry([_shop(1), _shop(1)])
    dangling = _shop(1).model_copy(update={"initial": "nowhere"})
    with pytest.raises(DefinitionError) as caught:
        MachineRegistry([dangling])
    the_line(caught.value.problems, "<definitions>: machine 'shop' v1: field 'initial'")


def test_validate_definition_of_a_parallel_machine_is_clean() -> None:
    definition = MachineDefinition.model_validate(
        {
            "machine": "fanout",
            "version": 1,
            "initial": "both",
            "states": {
                "both": {
                    "parallel": {
                        "pay": {
                            "command": {"service": "payment", "name": "pay"},
                            "compensation": {"service": "payment", "name": "refund"},
                            "on": {"paid": {"result": "done", "save_as": "payment"}, "no": "fail"},
                        },
                        "stock": {
                            "command": {"service": "stock", "name": "hold"},
                            "on": {"held": "done"},
                        },
                    },
                    "then": "done",
                },
                "done": {"final": "succeeded"},
            },
        }
    )
    assert isinstance(definition.states["both"], ParallelState)
    assert validate_definition(definition, "inline") == []
