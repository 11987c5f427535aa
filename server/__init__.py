"""crossgrad's server: sessions and their stores; the gRPC servicer, limits and auth build on them.

Depends on ``crossgrad.engine`` (and later ``crossgrad.v1``); the engine never imports it.
"""
