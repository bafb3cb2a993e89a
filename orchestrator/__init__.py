"""Sagawire orchestrator: runs sagas defined by machine files over RabbitMQ and MongoDB.

- `orchestrator.core`: the pure decision core (definitions, saga state, `decide()`).
- `orchestrator.runtime`: the asyncio actor runtime (`ActorSystem`) behind `orchestrator.ports`.
- `orchestrator.adapters`: the memory, RabbitMQ and MongoDB adapters.
- `orchestrator.testing`: a harness for testing machines, on memory or real servers.
- `orchestrator.cli` and `orchestrator.daemon`: the `sagawire` command and its daemon.

docs/architecture.md draws the layers and follows a reply from its queue to its ack.
"""
