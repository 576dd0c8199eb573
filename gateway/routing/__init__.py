"""Choosing and calling a deployment: the router, circuit breakers, backoff and deadlines."""
