"""The server's assembly: command line, configuration, lifecycle, TLS, metrics, workers.

``python -m geventchat.server`` (console script ``geventchat-server``) runs ``app.main``."""
