"""Find the secret that signs access tokens: from config, or kept in the data dir.

`auth.jwt_secret` (or SOCMETH_AUTH_JWT_SECRET) wins. Without it, a single node
generates one on first start and keeps it in `<data dir>/jwt_secret`, so that
tokens outlive a restart. A cluster's nodes must share the secret, or a token one
node issued would be refused by the next: in cluster mode a missing `auth.jwt_secret`
stops the start instead.

The file is created atomically: written under a temporary name with mode 0600, then
linked to its name, which fails if another process made it first (that one's is
then read), so two starts at once agree on one secret and nobody reads half a file.
A file that others may read is refused, as ssh refuses a private key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from socmeth.auth.access_tokens import MIN_SECRET_BYTES
from socmeth.config import Config
from socmeth.errors import ConfigError

logger = logging.getLogger(__name__)

SECRET_FILE = "jwt_secret"
# 48 random bytes, as 64 URL-safe characters: a valid auth.jwt_secret as it stands,
# so an operator moving to a cluster can copy the file's text into the config.
GENERATED_BYTES = 48


def jwt_secret(config: Config) -> bytes:
    """Return the JWT signing secret for this node.

    A node with auth enabled calls it at start, before serving, so that a cluster
    without a shared secret stops there. ConfigError (key `auth.jwt_secret`) in
    cluster mode when none is configured, and (key `server.data_dir`) when the kept
    file cannot be made or read, is too short, or may be read by others.
    """
    configured = config.auth.jwt_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    if config.clustered:
        raise ConfigError(
            "auth.jwt_secret",
            "cluster mode needs one secret shared by every node, or a token one node "
            "issued is refused by the others: set auth.jwt_secret (or "
            "SOCMETH_AUTH_JWT_SECRET) to the same value of at least "
            f"{MIN_SECRET_BYTES} bytes on each node, e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
        )
    return kept_secret(config.server.data_dir)


def kept_secret(data_dir: Path) -> bytes:
    """Return the secret kept in `data_dir`, generating it on first use."""
    path = data_dir / SECRET_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create(path)
        return _read(path)
    except OSError as exc:
        raise ConfigError(
            "server.data_dir",
            f"cannot keep the JWT secret in {path}: {exc.strerror or exc}; fix the "
            "folder's permissions, or set auth.jwt_secret",
        ) from exc


def _create(path: Path) -> None:
    """Write a new secret to `path` unless one appears there meanwhile."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secrets.token_urlsafe(GENERATED_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another start made it first: read that one
        _sync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    logger.info(
        "generated a JWT secret in %s",
        path,
        extra={"event": "auth.secret_generated"},
    )


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read(path: Path) -> bytes:
    """Read the kept secret, refusing a file others may read or a short secret."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            "server.data_dir",
            f"{path} holds the JWT secret but has mode {mode:04o}, so others on this "
            f"machine may read it: run `chmod 600 {path}`",
        )
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            "server.data_dir",
            f"{path} holds a JWT secret of {len(secret)} bytes, under the "
            f"{MIN_SECRET_BYTES} that HS256 needs: delete the file to have a new one "
            "generated (tokens issued so far stop working)",
        )
    return secret
