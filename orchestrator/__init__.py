"""Sagawire orchestrator."""
