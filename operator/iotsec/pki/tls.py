"""Server TLS that follows its files: a renewed certificate (or client CA) is used without a restart."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)


class ReloadingTLS:
    """An SSLContext whose certificate follows the files: new handshakes use the new pair.

    With `client_ca`, a client certificate is checked against it when presented (CERT_OPTIONAL: probes present
    none, and the application decides what an unauthenticated request may do). A renewed client CA is added;
    one it replaces stays trusted until the process restarts (an SSLContext cannot forget a CA).
    """

    def __init__(self, cert_file: Path, key_file: Path, client_ca: Path | None = None):
        self.cert_file, self.key_file, self.client_ca = cert_file, key_file, client_ca
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_OPTIONAL
        self._loaded = ""
        self.reload()

    def _digest(self) -> str:
        files = [self.cert_file, self.key_file, *([self.client_ca] if self.client_ca else [])]
        return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()

    def reload(self) -> bool:
        """Load the pair if it changed; keep serving the old one if the new one is unreadable or half-written."""
        try:
            digest = self._digest()
            if digest == self._loaded:
                return False
            self.context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca is not None:
                self.context.load_verify_locations(self.client_ca)
        except (OSError, ssl.SSLError) as exc:
            if not self._loaded:
                raise
            log.warning("keeping the current certificate: cannot load %s: %s", self.cert_file, exc)
            return False
        self._loaded = digest
        log.info("serving certificate loaded from %s", self.cert_file)
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload()
