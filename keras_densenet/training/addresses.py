"""Where a multi-process job's CPU collectives (gloo) listen: an address the
other processes reach.

JAX's gloo binds and advertises the address this host's name resolves to.
Many machines map their hostname to a loopback address (``/etc/hosts``:
``127.0.1.1 node1``), which no other host reaches: the job cannot form, and
``GLOO_SOCKET_IFNAME`` does not change it. `gloo_endpoint` chooses instead,
in this order:

1. the address or interface given (``train --gloo-address``);
2. the environment variable ``KERAS_DENSENET_GLOO_ADDRESS``;
3. the local address of the route to the coordinator: the one the
   coordinator sees this host's connections come from.

An interface is named as the host names it (``eth0``); anything else is a
hostname or an address of this host. Keras-free, so that the command line
checks the value before anything starts.

Example:

>>> endpoint = gloo_endpoint("127.0.0.1:1234", environ={})
>>> endpoint.hostname, endpoint.interface
('127.0.0.1', None)
>>> endpoint.describe()
'127.0.0.1 (the address of the route to the coordinator 127.0.0.1:1234)'
>>> gloo_endpoint("127.0.0.1:1234", "127.0.0.1", environ={}).describe()
'127.0.0.1 (given)'
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from typing import Mapping, Optional

#: The environment variable naming gloo's address or interface in every process.
GLOO_ADDRESS = "KERAS_DENSENET_GLOO_ADDRESS"


@dataclasses.dataclass(frozen=True)
class GlooEndpoint:
    """Where gloo listens in this process.

    Attributes:
        hostname: an address (or hostname) of this host, or ``None``.
        interface: a network interface's name, or ``None``.
        source: how it was chosen, for messages.
    """

    hostname: Optional[str]
    interface: Optional[str]
    source: str

    def describe(self) -> str:
        where = f"interface {self.interface}" if self.interface else (self.hostname or "this host's name")
        return f"{where} ({self.source})"


def split_address(address: str) -> tuple:
    """``(host, port)`` of ``host:port`` (``[v6]:port`` too).

    Example:

    >>> split_address("[::1]:80"), split_address("192.0.2.1:1234")
    (('::1', 80), ('192.0.2.1', 1234))
    """
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def route_address(host: str, port: int) -> Optional[str]:
    """The local address of this host's route to ``host:port``, or ``None``
    when `host` does not resolve or no route leads there.

    A UDP socket's ``connect`` only picks the route and the source address:
    no packet is sent.

    Example:

    >>> route_address("127.0.0.1", 9)
    '127.0.0.1'
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, kind, proto, _, target in infos:
        with contextlib.suppress(OSError), contextlib.closing(socket.socket(family, kind, proto)) as probe:
            probe.connect(target)
            return probe.getsockname()[0]
    return None


def interface_names() -> list:
    """This host's network interfaces, by name."""
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError:
        return []


def _local_address_error(value: str) -> Optional[str]:
    """Why `value` is not an address of this host (``None`` if it is)."""
    try:
        infos = socket.getaddrinfo(value, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        return f"it does not resolve ({e})"
    error = "no address"
    for family, kind, proto, _, target in infos:
        try:
            with contextlib.closing(socket.socket(family, kind, proto)) as probe:
                probe.bind(target)  # what gloo does with it
                return None
        except OSError as e:
            error = e.strerror or str(e)
    return f"it is not an address of this host ({error})"


def check_gloo_address(value: str, name: str = "gloo_address") -> None:
    """Raises a ValueError unless `value` names one of this host's
    interfaces or addresses.

    Example:

    >>> check_gloo_address("127.0.0.1")
    >>> check_gloo_address("192.0.2.254")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: gloo_address='192.0.2.254' is neither a network interface of this host (...) nor one of its ...
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must name an address of this host that the other processes reach, or a "
                         f"network interface. Received: {name}={value!r:.100}")
    if value in interface_names():
        return
    reason = _local_address_error(value)
    if reason is not None:
        raise ValueError(
            f"{name}={value!r:.100} is neither a network interface of this host "
            f"({', '.join(interface_names()) or 'none listed'}) nor one of its addresses: {reason}. "
            "Give an address of this host that the other processes reach, or its interface's name"
        )


def gloo_endpoint(coordinator: str, value: Optional[str] = None,
                  environ: Optional[Mapping[str, str]] = None, name: str = "gloo_address") -> GlooEndpoint:
    """Where gloo listens: `value`, else ``KERAS_DENSENET_GLOO_ADDRESS``,
    else the local address of the route to `coordinator`.

    Args:
        coordinator: the job's ``host:port`` of process 0.
        value: an interface name or an address of this host, or ``None``.
        environ: the environment (default: ``os.environ``).
        name: what messages call `value` (the command line's option).

    Returns:
        A `GlooEndpoint`; with neither given nor a route, its hostname and
        interface are ``None`` (gloo's own choice).

    Raises:
        ValueError: a given value that names no interface or address of
            this host.
    """
    environ = os.environ if environ is None else environ
    source = "given"
    if value is None and environ.get(GLOO_ADDRESS, "").strip():
        value, source = environ[GLOO_ADDRESS].strip(), GLOO_ADDRESS
    if value is not None:
        check_gloo_address(value, name if source == "given" else GLOO_ADDRESS)
        if value in interface_names():
            return GlooEndpoint(None, value, source)
        return GlooEndpoint(value, None, source)
    host, port = split_address(coordinator)
    address = route_address(host, port)
    if address is None:
        return GlooEndpoint(None, None, f"no route to the coordinator {coordinator}: gloo's own choice")
    return GlooEndpoint(address, None, f"the address of the route to the coordinator {coordinator}")
