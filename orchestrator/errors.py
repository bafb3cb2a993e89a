"""Sagawire's exceptions.

    SagawireError
    ├── DefinitionError          a machine definition is invalid (names file, machine, state, field)
    │   └── DefinitionChanged    a definition's content changed without a new version
    ├── ConfigurationError       bad settings or an unreachable service at start-up
    ├── TransportError           the broker failed
    ├── StartRefused             a start for a saga id that exists with another machine or data
    ├── RuntimeStopped           the runtime stopped or was killed; the message waits for another
    ├── StoreError               the saga store failed
    │   ├── VersionConflict      another writer saved the saga first; reload and decide again
    │   ├── SagaExists           a saga with this id is stored already
    │   └── StoreRefused         the server refused the document itself: retrying cannot help
    ├── InvalidMessage           a message that can never be read [runtime.codec]
    ├── UnknownMachine           no such machine or version registered; a KeyError [core.machines]
    ├── MachinePaused            a start of a machine an operator paused [core.pauses]
    ├── UnknownSaga              a message for a saga that is not stored [runtime.actor]
    ├── ConflictStorm            version conflicts without end on one saga [runtime.actor]
    └── AsyncApiError            `sagawire asyncapi` cannot do as asked [asyncapi.participants]
        └── UnknownService       a service no machine sends commands to

Those with a module in brackets are defined beside what raises them.

Business failures are not errors: a participant raises `participants_sdk.Reject`, which becomes
an event the machine maps, usually to `compensate`.
"""

from __future__ import annotations


class SagawireError(Exception):
    """Root of every error Sagawire raises on purpose."""


class DefinitionError(SagawireError):
    """One or more problems in machine definitions; `problems` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DefinitionChanged(DefinitionError):
    pass


class ConfigurationError(SagawireError):
    pass


class TransportError(SagawireError):
    pass


class StoreError(SagawireError):
    pass


class VersionConflict(StoreError):
    def __init__(self, saga_id: str, expected: int) -> None:
        self.saga_id = saga_id
        self.expected = expected
        super().__init__(f"saga {saga_id!r} was saved by another writer since version {expected}")


class SagaExists(StoreError):
    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"saga {saga_id!r} exists already")


class StoreRefused(StoreError):
    """The store refused what it was given (a key, a value, a size), not a failure of the
    store: the message that led to it is dead-lettered, never retried as if the store were down.
    """


class StartRefused(SagawireError):
    """A start for a saga id that exists, with another machine or other data."""


class RuntimeStopped(SagawireError):
    """The runtime was stopped or killed; the message is left for another one."""
