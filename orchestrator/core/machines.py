"""Machine definitions from disk, and the registry the runtime looks them up in.

`load_machines(path)` reads a YAML file or a folder of them (`*.yaml`, `*.yml`). A file may hold
several documents, one per machine version. Every problem in every file is collected first, then
one `DefinitionError` lists them all, one line each, naming file, machine, version, state and field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from orchestrator.core import conditions, definition
from orchestrator.core.definition import NAME_PATTERN, MachineDefinition
from orchestrator.core.validation import suggestion, validate_definition
from orchestrator.core.yaml_source import YamlProblem, load_documents
from orchestrator.errors import DefinitionError, SagawireError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from pathlib import Path

    from pydantic_core import ErrorDetails

_KINDS = ("task", "choice", "parallel", "final")
_STATE_KEYS = ("command", "choice", "parallel", "final")
# Every field name a definition can hold, to suggest one for a misspelt key.
_FIELDS = sorted(
    {
        field
        for module in (definition, conditions)
        for model in vars(module).values()
        if isinstance(model, type) and issubclass(model, BaseModel)
        for name, info in model.model_fields.items()
        for field in (name, info.alias)
        if field and not field.startswith("_")
    }
)


class UnknownMachine(SagawireError, KeyError):
    """No machine (or no such version of it) is registered."""

    def __str__(self) -> str:
        # KeyError would print the message quoted, as if it were a key.
        return str(self.args[0])


class MachineRegistry:
    """The machine definitions the orchestrator knows, by name and version; checked on entry."""

    def __init__(
        self,
        definitions: Iterable[MachineDefinition] = (),
        *,
        sources: Mapping[tuple[str, int], str] | None = None,
    ) -> None:
        self._sources = dict(sources or {})
        located = [(item, self.source(*item.key)) for item in definitions]
        problems = _duplicates(located)
        for item, source in located:
            problems.extend(validate_definition(item, source))
        if problems:
            raise DefinitionError(problems)
        self._by_key = {item.key: item for item, _ in located}

    def get(self, name: str, version: int) -> MachineDefinition:
        found = self._by_key.get((name, version))
        if found is None:
            versions = sorted(v for n, v in self._by_key if n == name)
            if versions:
                raise UnknownMachine(
                    f"machine '{name}' has no version {version}; "
                    f"known versions: {', '.join(map(str, versions))}"
                )
            raise UnknownMachine(self._unknown_name(name))
        return found

    def latest(self, name: str) -> MachineDefinition:
        versions = [v for n, v in self._by_key if n == name]
        if not versions:
            raise UnknownMachine(self._unknown_name(name))
        return self._by_key[(name, max(versions))]

    def find(self, name: str, version: int | None = None) -> MachineDefinition | None:
        """Like `get` (or `latest` without a version), but None when there is no such machine."""
        try:
            return self.latest(name) if version is None else self.get(name, version)
        except UnknownMachine:
            return None

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._by_key})

    def source(self, name: str, version: int) -> str:
        """Where a definition came from: its file, or `<definitions>` when built in code."""
        return self._sources.get((name, version), "<definitions>")

    def _unknown_name(self, name: str) -> str:
        known = self.names()
        return (
            f"unknown machine '{name}'{suggestion(name, known)}; "
            f"known machines: {', '.join(known) or 'none'}"
        )

    def __iter__(self) -> Iterator[MachineDefinition]:
        return iter([self._by_key[key] for key in sorted(self._by_key)])

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, item: object) -> bool:
        """`"order" in registry` for any version, `("order", 2) in registry` for one."""
        if isinstance(item, str):
            return any(name == item for name, _ in self._by_key)
        return item in self._by_key

    def __repr__(self) -> str:
        listed = ", ".join(f"{name} v{version}" for name, version in sorted(self._by_key))
        return f"MachineRegistry({listed})"


def load_machines(path: Path) -> MachineRegistry:
    """Every machine in a YAML file or a folder of them; DefinitionError lists all problems."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
        if not files:
            raise DefinitionError([f"{path}: no machine definitions (*.yaml, *.yml) in folder"])
    elif path.is_file():
        files = [path]
    else:
        raise DefinitionError([f"{path}: no such file or folder"])
    found: list[tuple[MachineDefinition, str]] = []
    problems: list[str] = []
    for file in files:
        problems.extend(_read_file(file, found))
    problems.extend(_duplicates(found))
    if problems:
        raise DefinitionError(problems)
    return MachineRegistry(
        [item for item, _ in found], sources={item.key: source for item, source in found}
    )


def load_machine_file(path: Path) -> list[MachineDefinition]:
    """The machine versions in one YAML file; DefinitionError lists all its problems."""
    found: list[tuple[MachineDefinition, str]] = []
    problems = _read_file(path, found)
    problems.extend(_duplicates(found))
    if problems:
        raise DefinitionError(problems)
    return [item for item, _ in found]


def _read_file(path: Path, found: list[tuple[MachineDefinition, str]]) -> list[str]:
    """Parse and check one file: append its definitions to `found`, return its problems."""
    source = str(path)
    try:
        documents = load_documents(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{source}: cannot read: {exc}"]
    except YamlProblem as exc:
        return [f"{source}: {exc}"]
    if not documents:
        return [f"{source}: no machine definition in this file"]
    problems: list[str] = []
    for number, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            problems.append(
                f"{source}: document {number}: expected a mapping with 'machine', 'version', "
                f"'initial' and 'states'; got {type(document).__name__}"
            )
            continue
        try:
            item = MachineDefinition.model_validate(document)
        except ValidationError as exc:
            head = (
                f"{source}: machine '{document.get('machine', '?')}' "
                f"v{document.get('version', '?')}"
            )
            problems.extend(_problem_line(head, error, document) for error in exc.errors())
            continue
        graph_problems = validate_definition(item, source)
        problems.extend(graph_problems)
        if not graph_problems:
            found.append((item, source))
    return problems


def _duplicates(found: list[tuple[MachineDefinition, str]]) -> list[str]:
    first: dict[tuple[str, int], str] = {}
    problems = []
    for item, source in found:
        if item.key not in first:
            first[item.key] = source
            continue
        where = (
            f"twice in {source}"
            if first[item.key] == source
            else f"in both {first[item.key]} and {source}"
        )
        problems.append(
            f"{source}: machine '{item.machine}' v{item.version}: field 'version': "
            f"version {item.version} is defined {where}; give the new one a new version"
        )
    return problems


def _problem_line(head: str, error: ErrorDetails, document: dict[str, Any]) -> str:
    """One pydantic error as `head: state '...': field '...': message`."""
    loc = list(error["loc"])
    if loc[:1] != ["states"] or len(loc) < 2:
        field = _field_path(loc)
        where = f"field '{field}': " if field else ""
        return f"{head}: {where}{_message(error)}"
    state = str(loc[1])
    if error["type"] == "state_kind":
        return f"{head}: state '{state}': {_kind_problem(document['states'][loc[1]])}"
    rest = loc[3:] if len(loc) > 2 and loc[2] in _KINDS else loc[2:]
    field = _field_path(rest) or "name"
    return f"{head}: state '{state}': field '{field}': {_message(error)}"


def _field_path(loc: list[int | str]) -> str:
    """`['on', 'paid', 'goto']` as `on.paid.goto`, `['choice', 0, 'when']` as `choice[0].when`."""
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _message(error: ErrorDetails) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        unknown = str(error["loc"][-1])
        return f"unknown field '{unknown}'{suggestion(unknown, _FIELDS)}"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"invalid name {given!r}: use letters, digits, '_' and '-'; start with a letter"
    if isinstance(given, str | int | float | bool) or given is None:
        return f"{error['msg']}; got {given!r}"
    return error["msg"]


def _kind_problem(state: object) -> str:
    need = "a state needs 'command' (task), 'choice', 'parallel' or 'final'"
    if not isinstance(state, dict):
        return f"{need}; got {type(state).__name__} {state!r}"
    unknown = [str(key) for key in state if str(key) not in _FIELDS]
    if unknown:
        key = unknown[0]
        return f"field '{key}': unknown field{suggestion(key, _STATE_KEYS)}; {need}"
    return f"field 'command': missing; {need}"
