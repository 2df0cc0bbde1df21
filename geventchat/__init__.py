"""geventchat: a multi-user chat server on gevent, with a terminal and a browser client."""

__version__ = "0.1.0"
