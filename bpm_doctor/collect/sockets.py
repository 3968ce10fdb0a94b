"""Read listening sockets from /proc/net, and map them to the manager and instance pids.

The kernel lists every socket of the network namespace in /proc/net/unix
and /proc/net/tcp{,6} (proc(5)); an owner is found by matching socket inodes
against the `/proc/PID/fd` links of the few processes that matter, which
needs the same access as reading their environment.
"""

from __future__ import annotations

import os
import posixpath

from bpm_doctor import identify
from bpm_doctor.model import Listener, Snapshot

# __SO_ACCEPTCON in the Flags column of /proc/net/unix marks a listening socket.
_SO_ACCEPTCON = 0x00010000
_TCP_LISTEN = "0A"
_AUTH_PROXY_PORT = 8276


def collect_listeners(snapshot: Snapshot, owner_pids: list[int], runtime_roots: set[str], proc_root: str = "/proc") -> None:
    """Record bridge-socket and auth-proxy listeners, with owners where they can be read."""
    inode_owner = _socket_inodes(owner_pids, proc_root, snapshot)
    listeners: list[Listener] = []
    for inode, path in _unix_listeners(proc_root):
        owner = inode_owner.get(inode)
        if not path.startswith("/"):
            path = _resolve_relative(path, owner, snapshot)
            if path is None:
                continue
        if not (identify.bridge_socket_service(path) or any(path.startswith(root + "/") for root in runtime_roots)):
            continue
        listeners.append(Listener("unix", path, owner))
    for inode, address, port in _tcp_listeners(proc_root):
        owner = inode_owner.get(inode)
        if port == _AUTH_PROXY_PORT or owner is not None:
            listeners.append(Listener("tcp", f"{address}:{port}", owner))
    snapshot.listeners = listeners


def _resolve_relative(path: str, owner: int | None, snapshot: Snapshot) -> str | None:
    """Return a relative socket path made absolute against its owner's working directory.

    The kernel lists the path exactly as given to bind(). The manager binds
    `./blueprint-manager/run/svc-B-S/svc-B-S.sock` when XDG_RUNTIME_DIR is
    unset, the usual case for a system service. Returns None when the owner
    or its working directory is unknown.
    """
    process = snapshot.processes.get(owner) if owner is not None else None
    if process is None or not process.cwd:
        return None
    # NOTE: wrong if the owner changed directory after bind().
    return posixpath.normpath(posixpath.join(process.cwd, path))


def _socket_inodes(pids: list[int], proc_root: str, snapshot: Snapshot) -> dict[int, int]:
    owners: dict[int, int] = {}
    for pid in pids:
        directory = f"{proc_root}/{pid}/fd"
        try:
            descriptors = os.listdir(directory)
        except PermissionError:
            snapshot.add_read_error("permission-denied:fd")
            continue
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(f"{directory}/{descriptor}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), pid)
    return owners


def _unix_listeners(proc_root: str) -> list[tuple[int, str]]:
    found = []
    try:
        with open(f"{proc_root}/net/unix", encoding="utf-8", errors="replace") as stream:
            next(stream, None)
            for line in stream:
                fields = line.split(None, 7)
                if len(fields) < 8:
                    continue
                path = fields[7].rstrip("\n")
                # A leading "@" marks an abstract socket, which has no file.
                if int(fields[3], 16) & _SO_ACCEPTCON and path and not path.startswith("@"):
                    found.append((int(fields[6]), path))
    except OSError:
        return []
    return found


def _tcp_listeners(proc_root: str) -> list[tuple[int, str, int]]:
    found = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc_root}/net/{name}", encoding="ascii", errors="replace") as stream:
                next(stream, None)
                for line in stream:
                    fields = line.split()
                    if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                        continue
                    address_hex, _, port_hex = fields[1].partition(":")
                    found.append((int(fields[9]), _address(address_hex), int(port_hex, 16)))
        except OSError:
            continue
    return found


def _address(address_hex: str) -> str:
    if len(address_hex) == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(address_hex)))
    words = [address_hex[i:i + 8] for i in range(0, 32, 8)]
    raw = b"".join(bytes(reversed(bytes.fromhex(word))) for word in words)
    return "[" + ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2)) + "]"
