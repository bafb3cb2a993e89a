"""The permission patterns `sagawire topology permissions` prints, checked name by name."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from orchestrator.adapters.rabbitmq.permissions import daemon_permissions, participant_permissions
from orchestrator.cli import commands  # noqa: F401 - registers the sub-commands
from orchestrator.cli.app import app

STOCK_OWN = [
    "sagawire.stock.commands.retry",
    "sagawire.stock.commands.delay.100",
    "sagawire.stock.commands.delay.3600000",
]
OTHERS = [
    "sagawire.payment.commands",
    "sagawire.payment.commands.retry",
    "sagawire.payment.commands.delay.100",
    "sagawire.payment.replies",
    "sagawire.stock.replies",
    "sagawire.stock.replies.dlq",
    "sagawire.control",
    "sagawire.commands",
    "amq.default",
    "sagawire.stock.commandsXretry",  # a dot in a pattern is escaped
    "sagawire.stock-2.commands",
]


def allowed(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None  # RabbitMQ searches, it does not fullmatch


def test_a_participant_configures_only_its_retry_exchange_and_delay_queues():
    stock = participant_permissions("stock")
    assert [n for n in STOCK_OWN + OTHERS if allowed(stock.configure, n)] == STOCK_OWN
    assert not allowed(stock.configure, "sagawire.stock.commands")  # the daemon declares it


def test_a_participant_reads_its_commands_and_writes_replies_and_dead_letters():
    stock = participant_permissions("stock")
    assert [n for n in OTHERS if allowed(stock.read, n)] == []
    assert allowed(stock.read, "sagawire.stock.commands")
    assert not allowed(stock.read, "sagawire.stock.commands.dlq")
    assert [n for n in OTHERS if allowed(stock.write, n)] == []
    for name in ("sagawire.replies", "sagawire.dlx", "sagawire.stock.commands", *STOCK_OWN):
        assert allowed(stock.write, name), name


def test_the_daemon_owns_every_service_queue_but_no_participant_retry():
    daemon = daemon_permissions()
    owned = [
        "sagawire.commands",
        "sagawire.replies",
        "sagawire.control",
        "sagawire.control.dlq",
        "sagawire.dlx",
        "sagawire.stock-2.commands",
        "sagawire.payment.commands.dlq",
        "sagawire.payment.replies",
        "sagawire.payment.replies.dlq",
    ]
    for pattern in (daemon.configure, daemon.write, daemon.read):
        assert all(allowed(pattern, name) for name in owned)
        assert not any(allowed(pattern, name) for name in [*STOCK_OWN, "amq.default"])


def test_the_command_lines_are_ready_for_a_shell():
    runner = CliRunner()
    result = runner.invoke(app, ["topology", "permissions", "stock", "--vhost", "shop"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("rabbitmqctl")]
    assert lines == [
        participant_permissions("stock").command("sagawire-stock", "shop"),
        daemon_permissions().command("sagawire-daemon", "shop"),
    ]
    assert lines[0].startswith("rabbitmqctl set_permissions -p shop sagawire-stock '^(")


@pytest.mark.parametrize("service", ["a.b", "stock*", ""])
def test_a_service_name_sagawire_would_refuse_is_a_usage_error(service):
    result = CliRunner().invoke(app, ["topology", "permissions", service])
    assert result.exit_code == 2
    assert "must match" in result.output
