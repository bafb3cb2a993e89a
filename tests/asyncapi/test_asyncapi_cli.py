"""`sagawire asyncapi`: the shipped machines as a document the AsyncAPI parser accepts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncapi_validator import assert_valid
from typer.testing import CliRunner

from orchestrator.cli.app import installed_version
from orchestrator.cli.main import app  # every command registered, as `sagawire` has them
from orchestrator.core.machines import load_machines
from participants_sdk import protocol

MACHINES = Path(__file__).resolve().parents[2] / "machines"
DEMO = "orchestrator.demo.participants:demo_participants"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def generate(runner: CliRunner, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["asyncapi", *args])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def test_the_shipped_machines_make_a_valid_document(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["asyncapi", "--machines", str(MACHINES)])

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    path = tmp_path / "asyncapi.yaml"
    path.write_text(result.stdout)
    assert_valid(path)
    document = yaml.safe_load(result.stdout)
    assert "&id" not in result.stdout  # no YAML anchors: every part reads on its own
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == installed_version()
    services = set().union(*(m.services() for m in load_machines(MACHINES)))
    assert set(document["channels"]) == {
        *(f"{s}.commands" for s in services),
        *(f"{s}.replies" for s in services),
        "control",
    }
    control = document["components"]["messages"]
    assert [
        control[f"control.{verb}"]["name"] for verb in ("start", "abort", "retry", "resume")
    ] == [
        "start",
        "abort",
        "retry",
        "resume",
    ]
    refund = control["payment.command.refund_payment"]
    assert refund["headers"]["required"][-1] == protocol.H_COMPENSATES
    assert "compensate:execute_payment" in refund["headers"]["properties"][protocol.H_STEP]["enum"]


def test_the_demo_participants_give_pydantic_payloads(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"

    result = runner.invoke(
        app,
        [
            *("asyncapi", "--machines", str(MACHINES), "--participant", DEMO),
            *("--format", "json", "--out", str(out)),
        ],
    )

    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # every demo handler answers a command the machines send
    assert str(out) in result.stdout
    document = json.loads(out.read_text())
    schemas = document["components"]["schemas"]
    messages = document["components"]["messages"]
    assert messages["payment.command.execute_payment"]["payload"] == {
        "$ref": "#/components/schemas/ExecutePayment"
    }
    assert schemas["ExecutePayment"]["properties"]["amount"]["type"] == "number"
    assert schemas["PrepareOrder"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/Item"
    }
    assert messages["stock.reply.order_prepared"]["payload"] == {
        "$ref": "#/components/schemas/OrderPrepared"
    }
    assert messages["stock.reply.out_of_stock"]["payload"]["additionalProperties"] is True
    # The FTGO machine's services have no participant: their payloads come from the machine.
    assert "$ref" not in messages["kitchen.command.create_ticket"]["payload"]
    assert_valid(out)


def test_one_service_has_only_its_own_channels(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["asyncapi", "--machines", str(MACHINES), "--service", "stock"])

    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert set(document["channels"]) == {"stock.commands", "stock.replies"}
    assert set(document["operations"]) == {"stock.prepare_order", "stock.release_stock"}
    assert {key.split(".")[0] for key in document["components"]["messages"]} == {"stock"}
    path = tmp_path / "stock.yaml"
    path.write_text(result.stdout)
    assert_valid(path)


def test_json_and_yaml_hold_the_same_document(runner: CliRunner) -> None:
    as_yaml = generate(runner, "--machines", str(MACHINES))
    as_json = runner.invoke(app, ["asyncapi", "--machines", str(MACHINES), "--format", "json"])

    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == as_yaml


def test_the_machines_default_like_the_other_commands(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines" / "order.yaml").write_text((MACHINES / "order.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGAWIRE_MACHINES", raising=False)

    assert "order" in generate(runner)["info"]["description"]
    monkeypatch.setenv("SAGAWIRE_MACHINES", str(MACHINES))
    assert "create_order" in generate(runner)["info"]["description"]


def test_an_unknown_service_is_named_with_the_known_ones(runner: CliRunner) -> None:
    result = runner.invoke(app, ["asyncapi", "--machines", str(MACHINES), "--service", "stok"])

    assert result.exit_code == 1
    assert "unknown service 'stok' (did you mean 'stock'?)" in result.stderr
    assert "delivery, kitchen, order, payment, stock" in result.stderr


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("sagawire_no_such_module:x", "cannot import 'sagawire_no_such_module'"),
        ("orchestrator.demo.participants:nothing", "has no attribute 'nothing'"),
        ("orchestrator.demo.participants", "expected MODULE:ATTR"),
        ("orchestrator.demo.participants:Item", "not a Participant"),
        ("orchestrator.demo.participants:FAILING_SERVICES", "not a Participant"),
        ("orchestrator.demo.participants:demo_services", "calling demo_services() failed"),
    ],
)
def test_a_bad_participant_exits_2_naming_it(runner: CliRunner, spec: str, says: str) -> None:
    result = runner.invoke(app, ["asyncapi", "--machines", str(MACHINES), "--participant", spec])

    assert result.exit_code == 2
    assert f"--participant {spec!r}" in result.stderr
    assert says in result.stderr
    assert result.stdout == ""


def test_two_participants_for_one_service_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["asyncapi", "--machines", str(MACHINES), "--participant", DEMO, "--participant", DEMO],
    )

    assert result.exit_code == 2
    assert "two participants for service" in result.stderr


def test_a_participant_module_in_the_current_folder_and_its_unused_handlers(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sagawire_test_warehouse.py").write_text(
        textwrap.dedent(
            """\
            from pydantic import BaseModel
            from participants_sdk import CommandContext, Participant

            class Count(BaseModel):
                sku: str

            class Counted(BaseModel):
                sku: str
                quantity: int

            stock = Participant("stock")

            @stock.command_handler("count_stock")
            async def count_stock(cmd: Count, ctx: CommandContext) -> Counted:
                return Counted(sku=cmd.sku, quantity=1)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # undone after the test, as the CLI's is not

    result = runner.invoke(
        app,
        ["asyncapi", "--machines", str(MACHINES), "--participant", "sagawire_test_warehouse:stock"],
    )

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "note: participant 'stock': no machine sends 'count_stock'; its handler is left out\n"
    )
    assert (
        "stock.command.count_stock" not in yaml.safe_load(result.stdout)["components"]["messages"]
    )


def test_machine_problems_are_reported_as_validate_reports_them(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(
        "machine: shop\nversion: 1\ninitial: pay\nstates:\n  pay: {command: {service: p}}\n"
    )

    result = runner.invoke(app, ["asyncapi", "--machines", str(tmp_path)])
    validate = runner.invoke(app, ["machines", "validate", str(tmp_path)])

    assert result.exit_code == validate.exit_code == 1
    assert result.stderr == validate.stderr
    assert f"{tmp_path / 'bad.yaml'}: machine 'shop' v1: state 'pay'" in result.stderr
    assert result.stderr.endswith(f"problem(s) in {tmp_path}\n")
    assert result.stdout == ""


def test_a_missing_machines_folder_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["asyncapi", "--machines", str(tmp_path / "absent")])

    assert result.exit_code == 2
    assert "no such file or folder of machines" in result.stderr


def test_an_unknown_format_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["asyncapi", "--machines", str(MACHINES), "--format", "xml"])

    assert result.exit_code == 2
    assert "--format 'xml': use one of yaml, json" in result.stderr
