"""Named limits and tunables, with the reason for each default.

Every limit that a user can change has a server flag of the same name; these are the
defaults. They are chosen so that a well-behaved client never meets them, while one
misbehaving client cannot take memory or time from the others.
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345

# Longest line (in bytes, without its line ending) the server accepts. Chat lines are
# short; 4 KiB leaves room for pasted text while bounding what one connection's partial
# input can hold: the framer never buffers more than this (plus a trailing "\r").
MAX_LINE = 4096

# Bytes that may wait in the server for one slow reader before it is dropped ("SendQ
# exceeded"). 1 MiB is about 20,000 typical chat lines: far more than a live client ever
# lags, small enough that 10,000 stuck clients could not exhaust the machine.
MAX_SENDQ = 1024 * 1024

# Connections served at once. Each idle connection costs a few KiB, so 10,000 is well
# within one process's memory while keeping the file-descriptor need under common limits.
MAX_CLIENTS = 10_000

# Connections from one remote address at once. By default as many as --max-clients: the
# contract promises that the defaults never refuse a well-behaved client, and on loopback
# (the benchmark, tests, a local chat) every client comes from the same address, as do
# whole offices behind one NAT address. An operator on the open network sets it lower
# (e.g. 100), so that one machine cannot take every seat by opening connection after
# connection.
MAX_PER_IP = MAX_CLIENTS

# Seconds a client may send nothing before it is dropped; 0 = never. Off by default: a
# chat client may listen silently for hours, and TCP keepalive already finds peers that
# are gone. An operator who wants idle seats freed sets it (e.g. 3600).
IDLE_TIMEOUT = 0.0

# Seconds one line may stay unfinished (its first bytes received, its newline not yet):
# against slowloris, a client that holds the server's line buffer by trickling bytes.
# A person's line arrives whole (clients send it when Enter is pressed) and even a 4 KiB
# line crosses a slow mobile link in well under a second, so 60 s never hits a real client.
LINE_TIMEOUT = 60.0

# Seconds a TLS handshake may take before the connection is closed. A handshake is two
# round trips and a little CPU: 10 s covers a slow mobile link many times over, and bounds
# how long a peer that never finishes (a plain-text client, a scanner) holds a socket.
TLS_HANDSHAKE_TIMEOUT = 10.0

# Bytes asked of the kernel per recv. Large enough to take a burst of pipelined lines in
# one call (fewer system calls and greenlet switches); the buffer is released right away.
RECV_SIZE = 64 * 1024

# Nicknames and room names: short enough for one screen line, long enough for real names.
MAX_NICK = 32
MAX_ROOM = 32
DEFAULT_ROOM = "lobby"

# /who packs at most this many names in one reply line, so that a crowded room's reply
# stays far below MAX_LINE for any client that applies the same limit.
WHO_NAMES_PER_LINE = 50

# Seconds without input after which a plain TCP connection's reader greenlet is released
# ("parked"): a parked greenlet holds about 7.5 KiB (its Python data-stack page and saved C
# stack), most of an idle connection's cost. An I/O watcher starts a new reader when input
# comes; that costs a greenlet spawn (microseconds), so 2 s keeps every active chatter on
# its greenlet and only frees those that are really idle.
PARK_AFTER = 2.0

# Presence in a busy room: after a room's presence line (a join, part, quit or rename) has
# gone out, further ones within this many seconds are gathered and go out together, one
# piece per member, when it has passed. A lone join is told at once; a connect storm (a
# server restart, a class logging in) costs one write per member per 100 ms instead of
# one per member per join (5,000 clients connecting with presence on: 7.3 s -> 1.35 s;
# 20 ms gave 3.8 s). Nothing else is held: chat, and a command's reply, send the
# gathered lines on first, so that every member still sees its room's events in order.
PRESENCE_BATCH_S = 0.1
# At most this many presence lines are held: each newcomer of a batch gets its own piece
# (the joins after its own), so a batch's bytes grow with the square of its joins. 5,000
# clients connecting with presence on: 400 kept the connect time (1.47 s against 1.45
# without a cap) and took the memory per client from 4.1 to 2.7 KiB; 128 gave 2.6 KiB but
# 1.92 s.
PRESENCE_BATCH_MAX = 400

# Seconds that a loop turn which relays chat lasts at least while the server is busy (such
# turns following each other closely; doors/pacer.py): each client then gets one send for
# what all senders sent in that time. 10 busy clients (benchmark, window 32): 3.6 sends per
# chunk relayed became about 1.5, and deliveries per server CPU-second rose 1.3x; the
# 100-client shape gained 1.6x, the 500-client one was level. A calm room's lines are never
# held (a turn after a quiet one is not), nor are welcomes, replies and presence.
BUSY_TURN = 0.001

# Seconds that a stop (SIGINT/SIGTERM) waits for pending output to reach the clients
# before closing their sockets anyway. The contract promises an exit within 10 s.
SHUTDOWN_TIMEOUT = 5.0

# Seconds that a leaving client's last replies may take to be written before its socket
# is closed regardless (a client that says "exit" and then stops reading).
QUIT_FLUSH_TIMEOUT = 2.0
