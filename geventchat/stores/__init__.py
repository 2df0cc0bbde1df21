"""Stores: where the chat keeps what outlives a connection (room history, accounts).

Below the server (which picks one by its flags) and beside the doors: a store knows
nothing of sockets or members, only rooms, lines and records.
"""
