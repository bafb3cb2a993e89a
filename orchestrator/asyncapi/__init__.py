"""Sagawire as an AsyncAPI 3.0.0 document: channels, operations and messages over RabbitMQ.

    document = asyncapi_document(load_machines(path), version="0.1.0", participants=[payments])

Pure: the machines and participants are given, the document is a dict; `sagawire asyncapi`
loads them and writes it out as YAML or JSON.
"""

from orchestrator.asyncapi.document import asyncapi_document
from orchestrator.asyncapi.participants import AsyncApiError, UnknownService, unmatched

__all__ = ["AsyncApiError", "UnknownService", "asyncapi_document", "unmatched"]
