"""Request handlers of the simulated gateway, one module per request family (mixed into SimGateway)."""
