"""Loaded by every Python process whose PYTHONPATH starts with this directory (the planning tests, a rehearsal's jobs):
any connection beyond this machine fails loudly, as on an offline compute node. Loopback stays open (a rehearsal's
judge is a server on 127.0.0.1)."""

import ipaddress
import socket

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(host):
    raise OSError(f"network access to {host!r} from an offline process (only 127.0.0.1 is reachable here)")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_getaddrinfo, _create_connection = socket.getaddrinfo, socket.create_connection


def _guarded(method):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            _refuse(address[0])
        return method(self, address)
    return connect


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host):
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)


def create_connection(address, *args, **kwargs):
    if not _loopback(address[0]):
        _refuse(address[0])
    return _create_connection(address, *args, **kwargs)


socket.socket.connect = _guarded(_connect)
socket.socket.connect_ex = _guarded(_connect_ex)
socket.getaddrinfo = getaddrinfo
socket.create_connection = create_connection
