"""Reference chat servers that speak the seed's line format, for ``python -m bench --compare``.

* ``threaded_server``: the classic thread-per-client design of the original assignment.
* ``asyncio_server``: an idiomatic asyncio streams server (uvloop when importable).
* ``lossy_server``: a deliberately broken toy (drops lines) to test the benchmark itself.
"""
