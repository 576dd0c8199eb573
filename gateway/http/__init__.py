"""The HTTP face: the only code that knows ASGI, headers and bytes.

One route table, one dispatcher, one place where errors become answers, and the typed
record of what a request has gathered. Only ``gateway.app`` imports this package.
"""
