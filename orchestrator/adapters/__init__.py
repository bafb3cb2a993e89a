"""Adapters behind the ports: in-memory (embedded mode and tests), RabbitMQ and MongoDB."""
