"""A machine as a diagram: Mermaid (`stateDiagram-v2`, renders in GitHub markdown) or Graphviz dot.

Each state shows its label, the command it sends with timeout and attempts, and the compensation
that undoes it; transitions carry the reply event, the choice condition or "timed out". The
reserved target `compensate` is drawn as a state of its own: it runs the compensations of the
steps done, newest first, and ends the saga `compensated`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from orchestrator.core.conditions import Condition
from orchestrator.core.definition import (
    COMPENSATE,
    Branch,
    ChoiceState,
    CommandSpec,
    FinalState,
    MachineDefinition,
    ParallelState,
    TaskState,
)

FORMATS = ("mermaid", "dot")

_COMPARISONS = {
    "equals": "==",
    "not_equals": "!=",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "in": "in",
}


def describe_condition(condition: Condition) -> str:
    """`$.total > 100`, `$.vip exists`, `not ($.a == 1)`, `$.x == 1 and $.y < 2`."""
    if condition.all is not None:
        return " and ".join(_grouped(c) for c in condition.all)
    if condition.any is not None:
        return " or ".join(_grouped(c) for c in condition.any)
    if condition.not_ is not None:
        return f"not ({describe_condition(condition.not_)})"
    if "exists" in condition.model_fields_set:
        return f"{condition.path} {'exists' if condition.exists else 'is missing'}"
    for name, operator in _COMPARISONS.items():
        attribute = "in_" if name == "in" else name
        if attribute in condition.model_fields_set:
            value = _plain(getattr(condition, attribute))
            return f"{condition.path} {operator} {json.dumps(value)}"
    return str(condition.path)


def _plain(value: Any) -> Any:  # noqa: ANN401 - a JSON value
    """100.0 as 100: limits are read as floats, written as the machine's author wrote them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _grouped(condition: Condition) -> str:
    text = describe_condition(condition)
    return f"({text})" if condition.all is not None or condition.any is not None else text


def duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _command(spec: CommandSpec) -> str:
    return f"{spec.service}.{spec.name}"


def _step_lines(step: TaskState | Branch) -> list[str]:
    lines = [f"{_command(step.command)}, timeout {duration(step.timeout)} x{step.retry.attempts}"]
    if step.compensation is not None:
        lines.append(f"undo {_command(step.compensation)}")
    return lines


def _edges(definition: MachineDefinition) -> Iterator[tuple[str, str, str]]:
    """(from, to, label) for every transition, in the order the definition gives them."""
    yield "[*]", definition.initial, ""
    for name, state in definition.states.items():
        if isinstance(state, TaskState):
            for event, transition in state.on.items():
                yield name, transition.goto, event
            yield name, state.on_timeout, "timed out"
        elif isinstance(state, ChoiceState):
            for rule in state.choice:
                yield name, rule.goto, describe_condition(rule.when)
            yield name, state.default, "otherwise"
        elif isinstance(state, ParallelState):
            yield name, state.then, "all branches done"
            yield name, state.on_failure, "a branch failed"
        elif isinstance(state, FinalState):
            yield name, "[*]", state.final


def _lines(definition: MachineDefinition, name: str) -> list[str]:
    state = definition.states[name]
    lines = [state.label] if state.label else []
    if isinstance(state, TaskState):
        lines += _step_lines(state)
    elif isinstance(state, ParallelState):
        for branch_name, branch in state.parallel.items():
            lines += [f"{branch_name}: {line}" for line in _step_lines(branch)]
    elif isinstance(state, FinalState):
        lines.append(f"ends {state.final}")
    return lines


def _uses_compensate(definition: MachineDefinition) -> bool:
    return any(target == COMPENSATE for _, target, _ in _edges(definition))


_COMPENSATE_TEXT = "compensations of the steps done, newest first"


def mermaid(definition: MachineDefinition) -> str:
    out = ["stateDiagram-v2"]
    for name, state in definition.states.items():
        if isinstance(state, ChoiceState):
            out.append(f"    state {name} <<choice>>")
            continue
        out.extend(f"    {name} : {_mermaid_text(line)}" for line in _lines(definition, name))
    if _uses_compensate(definition):
        out.append(f"    {COMPENSATE} : {_COMPENSATE_TEXT}")
        out.append(f"    {COMPENSATE} --> [*] : compensated")
    for source, target, label in _edges(definition):
        out.append(f"    {source} --> {target}" + (f" : {_mermaid_text(label)}" if label else ""))
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    # A label runs to the end of the line; ';' and '#' would start a new statement or an entity.
    return text.replace(";", ",").replace("#", "no.").replace(":", " -")


def dot(definition: MachineDefinition) -> str:
    graph = f"{definition.machine}_v{definition.version}"
    out = [
        f"digraph {graph} {{",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        "  start [shape=point];",
    ]
    for name, state in definition.states.items():
        shape = {ChoiceState: "diamond", FinalState: "doubleoctagon"}.get(type(state), "box")
        label = "\\n".join([name, *_lines(definition, name)])
        out.append(f"  {name} [shape={shape}, label={_dot_string(label)}];")
    if _uses_compensate(definition):
        label = f"{COMPENSATE}\\n{_COMPENSATE_TEXT}\\nends compensated"
        out.append(f"  {COMPENSATE} [shape=octagon, label={_dot_string(label)}];")
    for source, target, label in _edges(definition):
        if target == "[*]":
            continue
        start = "start" if source == "[*]" else source
        attributes = f" [label={_dot_string(label)}]" if label else ""
        out.append(f"  {start} -> {target}{attributes};")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def render(definition: MachineDefinition, form: str) -> str:
    renderers: dict[str, Any] = {"mermaid": mermaid, "dot": dot}
    if form not in renderers:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {form!r}")
    return str(renderers[form](definition))
