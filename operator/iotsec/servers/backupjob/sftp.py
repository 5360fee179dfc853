"""restic's sftp: repositories over an ssh client that trusts only the mounted key and known_hosts.

The Job runs as UID 10001 with HOME=/nonexistent: nothing may come from or go to a home directory, so ssh gets
``-F /dev/null`` (no user config), only the mounted identity (``IdentitiesOnly``, no agent), only the mounted
known_hosts (``GlobalKnownHostsFile=/dev/null``) and ``StrictHostKeyChecking=yes``: an unknown or changed host key
fails the run, it is never accepted. restic splits ``sftp.command`` on blanks, so paths with blanks or quotes are
refused rather than quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SECRET_KEYS = ("ssh-privatekey", "known_hosts")  # ssh-privatekey: the key of a kubernetes.io/ssh-auth Secret
HOST_KEY_FAILED = "Host key verification failed"  # ssh's words
SFTP_START_FAILED = "unable to start the sftp session"  # restic's words when ssh exits early
_UNSAFE = re.compile(r"[\s'\"\\]")


@dataclass(frozen=True)
class SftpLocation:
    """Where an sftp: repository lives: ``sftp:user@host:/path`` or ``sftp://user@host:port//path``."""

    user: str | None
    host: str
    port: int | None
    path: str

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def is_sftp(repository: str) -> bool:
    return repository.startswith("sftp:")


def parse_sftp(repository: str) -> SftpLocation:
    """The user, host, port and path of an sftp: repository; ValueError if it is not one restic understands.

    IPv6 hosts come in brackets (``sftp:user@[::1]:/srv``, ``sftp://user@[::1]:2222//srv``)."""
    if not is_sftp(repository):
        raise ValueError(f"{repository!r} is not an sftp: repository")
    rest = repository[len("sftp:") :]
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        if not slash:
            raise ValueError("an sftp:// repository needs a path after the host: sftp://user@host:port//path")
        user, host, port = _authority(authority)
        return SftpLocation(user, host, port, path)
    user_host, colon, path = _split_scp(rest)
    if not colon or not path:
        raise ValueError("an sftp: repository is sftp:user@host:/path or sftp://user@host:port//path")
    user, host, port = _authority(user_host)
    if port is not None:
        raise ValueError("sftp:user@host:/path names no port; use sftp://user@host:port//path")
    return SftpLocation(user, host, None, path)


def _split_scp(rest: str) -> tuple[str, str, str]:
    """``user@host:path`` split at the colon after the host (a bracketed IPv6 host has colons of its own)."""
    at = rest.rfind("@", 0, rest.find("[") if "[" in rest else len(rest))
    start = at + 1
    if rest.startswith("[", start):
        end = rest.find("]", start)
        if end < 0:
            raise ValueError("an IPv6 host needs its closing bracket")
        start = end
    colon = rest.find(":", start)
    if colon < 0:
        return rest, "", ""
    return rest[:colon], ":", rest[colon + 1 :]


def _authority(text: str) -> tuple[str | None, str, int | None]:
    user, at, hostport = text.rpartition("@")
    if not at:
        user, hostport = "", text
    port: str | None = None
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise ValueError("an IPv6 host needs its closing bracket")
        if after:
            if not after.startswith(":"):
                raise ValueError(f"unexpected {after!r} after the IPv6 host")
            port = after[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
    if not host or _UNSAFE.search(host) or host.startswith("-"):
        raise ValueError("an sftp repository needs a host name without blanks or quotes")
    if user and (_UNSAFE.search(user) or user.startswith("-")):
        raise ValueError("the sftp user name must not contain blanks or quotes")
    number = None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"sftp port {port!r} is not a number from 1 to 65535")
        number = int(port)
    return user or None, host, number


def ssh_argv(location: SftpLocation, identity_file: str, known_hosts_file: str, ssh: str = "ssh") -> list[str]:
    """The ssh client restic runs for this repository (``-s sftp``: the server's sftp subsystem)."""
    for label, path in (("ssh key file", identity_file), ("known_hosts file", known_hosts_file)):
        if not path or _UNSAFE.search(path):
            raise ValueError(f"the {label} path {path!r} must be non-empty, without blanks or quotes")
    argv = [
        ssh,
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-i",
        identity_file,
        "-o",
        f"UserKnownHostsFile={known_hosts_file}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UpdateHostKeys=no",
    ]
    if location.port is not None:
        argv += ["-p", str(location.port)]
    return [*argv, location.destination, "-s", "sftp"]
