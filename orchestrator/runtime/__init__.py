"""The actor runtime: one asyncio actor per live saga, driven by a broker, a store and a clock."""
