"""The sans-IO core: wire protocols, command parsing, names and limits.

No sockets, no gevent: bytes in, events out; everything above builds on it."""
