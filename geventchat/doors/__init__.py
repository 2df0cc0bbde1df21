"""The front doors: each a codec plus a transport over a shared per-member session."""
