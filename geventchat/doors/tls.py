"""TLS for the chat port: the server's context and a bounded handshake.

The handshake runs in the connection's own greenlet, after the cheap checks (server
full, too many from one address) and before anything else, with a timeout: a plain-text
client on the TLS port, a scanner, or a peer that never finishes the handshake is closed
and logged in one line, and costs the others nothing (no traceback, no greenlet left).

The server's sockets are gevent's own ``SSLSocket`` (from ``gevent.ssl``, without monkey
patching): the connection then reads and writes through the socket object, which does the
encryption (see ``reader.Reader._receive_buffered`` and ``session.Session._drain``).
"""

from __future__ import annotations

import logging
import re
import socket
import ssl

import gevent
from gevent import ssl as gssl

log = logging.getLogger("geventchat")


class TLSConfigError(Exception):
    """The certificate or key cannot be used; the text is the one line to show."""


def server_context(certfile: str, keyfile: str | None = None) -> gssl.SSLContext:
    """A server context for this certificate chain and key, or TLSConfigError."""
    context = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise TLSConfigError(f"Error: cannot use TLS: no such file: {exc.filename or certfile}") from None
    except PermissionError as exc:
        raise TLSConfigError(f"Error: cannot use TLS: permission denied: {exc.filename or certfile}") from None
    except IsADirectoryError as exc:
        raise TLSConfigError(f"Error: cannot use TLS: is a directory: {exc.filename or certfile}") from None
    except ssl.SSLError as exc:
        if keyfile is None and not _mentions_private_key(certfile):
            raise TLSConfigError(f"Error: cannot use TLS: no private key in {certfile} (give --keyfile)") from None
        what = f"{certfile} and {keyfile}" if keyfile else certfile
        raise TLSConfigError(f"Error: cannot use TLS: {what}: {describe_ssl_error(exc)}") from None
    except OSError as exc:
        raise TLSConfigError(f"Error: cannot use TLS: {exc.strerror or exc}") from None
    return context


def _mentions_private_key(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"PRIVATE KEY-----" in f.read(1 << 20)
    except OSError:
        return True  # cannot tell: let the SSL error speak


def describe_ssl_error(exc: BaseException) -> str:
    """A short reason for a TLS failure (``wrong version number``, ``timed out``...)."""
    if isinstance(exc, gevent.Timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        if exc.reason:
            reason = str(exc.reason)
        else:  # "[SSL] PEM lib (_ssl.c:3905)" -> "PEM lib"
            reason = str(exc.args[1] if len(exc.args) > 1 else exc)
            reason = re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", reason)
        reason = reason.replace("_", " ").lower()
        # Certificate and key problems come with a terse reason; say what it means.
        if reason in ("pem lib", "no start line", "no certificate or crl found"):
            return "not a PEM certificate and key"
        if reason == "key values mismatch":
            return "the key does not match the certificate"
        return reason or "TLS error"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def handshake(sock: socket.socket, context: gssl.SSLContext, timeout: float) -> tuple[gssl.SSLSocket | None, str]:
    """Server side of the handshake, bounded by ``timeout`` seconds.

    Returns (the TLS socket, "") or (None, the reason it failed); on failure the socket is
    closed. Never raises for anything the peer does.
    """
    try:
        tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:  # reset before we started
        sock.close()
        return None, describe_ssl_error(exc)
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        tls_sock.do_handshake()
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        tls_sock.close()
        return None, "timed out"
    except (OSError, ValueError) as exc:  # SSLError is an OSError; so are resets
        tls_sock.close()
        return None, describe_ssl_error(exc) if not isinstance(exc, ValueError) else str(exc)
    finally:
        timer.close()
    return tls_sock, ""
