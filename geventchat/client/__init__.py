"""The terminal client: ``python -m geventchat.client`` (console script ``geventchat``).

It stands on ``geventchat.core`` alone (the wire protocol), never on the server's code."""
