"""The orchestrator daemon: wiring of settings, adapters, the actor system and its endpoint."""
