"""Device mesh, multi-host start-up and sharding rules."""
