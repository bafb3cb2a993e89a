"""`sagawire gateway`: the HTTP API (and the flow monitor) beside the daemon.

A process of its own rather than routes in the daemon: it talks to the daemon the way the CLI
does (start and operator requests through the control queue, reads from MongoDB), so it can run
as several replicas behind a load balancer, be restarted or exposed without touching the
daemon's event loop, and hold the only credentials an HTTP client can reach.
"""
