"""The chat state: hub, rooms, members, commands, and the cluster hub with its Redis bus."""
