"""The actor runtime: one asyncio actor per live saga, driven by the broker, the store and a clock."""
