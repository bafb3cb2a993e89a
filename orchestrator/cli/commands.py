"""Imports every command module so that each registers itself on the app."""

from __future__ import annotations

from orchestrator.cli import (
    asyncapi_cmd,  # noqa: F401
    demo_cmd,  # noqa: F401
    dlq_cmd,  # noqa: F401
    gateway_cmd,  # noqa: F401
    machines_cmd,  # noqa: F401
    operate_cmd,  # noqa: F401
    run_cmd,  # noqa: F401
    sagas_cmd,  # noqa: F401
    stats_cmd,  # noqa: F401
    topology_cmd,  # noqa: F401
)
