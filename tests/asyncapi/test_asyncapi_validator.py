"""The validator itself: it passes a good document and fails a broken one, so its verdict counts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from asyncapi_validator import problems, run_validator, validate

GOOD = textwrap.dedent(
    """\
    asyncapi: 3.0.0
    info: {title: t, version: '1', description: d}
    channels:
      stock.commands:
        address: 'stock.{command}'
        parameters:
          command: {enum: [prepare_order]}
        bindings:
          amqp:
            is: routingKey
            exchange: {name: sagawire.commands, type: topic, durable: true, autoDelete: false}
            bindingVersion: 0.3.0
        messages:
          prepare_order: {$ref: '#/components/messages/prepare_order'}
    operations:
      stock.prepare_order:
        action: receive
        channel: {$ref: '#/channels/stock.commands'}
        messages: [{$ref: '#/channels/stock.commands/messages/prepare_order'}]
    components:
      messages:
        prepare_order:
          payload: {type: object, properties: {order_id: {type: string}}}
    """
)


def test_a_good_document_passes(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)

    code, report = validate(path)

    assert code == 0, report
    assert report["ok"] is True
    assert problems(report) == []


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("type: topic,", "type: fanciful,"),  # an exchange type AMQP does not have
        ("'#/components/messages/prepare_order'", "'#/components/messages/nothing'"),
        ("action: receive", "action: consume"),
        ("'stock.{command}'", "'stock.{cmd}'"),  # a parameter the address does not name
    ],
)
def test_a_broken_document_fails_with_errors(tmp_path: Path, broken: str, expected: str) -> None:
    assert broken in GOOD
    path = tmp_path / "broken.yaml"
    path.write_text(GOOD.replace(broken, expected))

    code, report = validate(path)

    assert code == 1
    assert report["ok"] is False
    assert [d for d in report["diagnostics"] if d["severity"] == "error"] != []


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    done = run_validator(tmp_path / "absent.yaml")

    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_without_the_parser_installed_the_test_fails_naming_the_make_target(
    tmp_path: Path,
) -> None:
    (tmp_path / "validate.mjs").write_text("")

    with pytest.raises(pytest.fail.Exception, match="make node-deps"):
        validate(tmp_path / "any.yaml", root=tmp_path)
