"""What a registry server needs to know, passed to each worker process through the environment."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from vopstore.errors import ConfigError
from vopstore.home import home_dir

_PREFIX = "VOPSTORE_SERVER_"


@dataclass(frozen=True)
class ServerSettings:
    """The registry server's configuration.

    Args:
        db: database URL (holds the credentials the clients never see), or a directory store's folder.
        blobs: blob store URL (``s3://bucket/prefix`` or a folder); needed with a database URL.
        max_upload_bytes: larger uploads are refused with 413 before they are stored.
        max_concurrent_uploads: uploads a worker takes at once (others wait), bounding its temporary disk use.
        rate: requests per second each token may make (a token bucket per token and worker); 0 turns it off.
        burst: how many requests a token may make at once before ``rate`` applies.
        presign: serve S3 downloads as short-lived presigned URLs (307) instead of through the server.
        presign_ttl_s: how long such a URL lives.
        upload_dir: where resumable uploads keep their partial bytes; every worker must see the same folder
            (default ``$VOPSTORE_HOME/registry-uploads`` of the server process).
        upload_ttl_s: a resumable upload untouched this long is abandoned: its partial bytes are removed.
        name: how the registry calls itself in messages (never the database URL).
    """

    db: str
    blobs: str | None = None
    max_upload_bytes: int = 256 * 1024 * 1024
    rate: float = 200.0
    burst: float = 400.0
    max_concurrent_uploads: int = 4
    presign: bool = False
    presign_ttl_s: int = 60
    upload_dir: str | None = None
    upload_ttl_s: int = 24 * 3600
    name: str = "the registry"

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_concurrent_uploads < 1 or self.rate < 0 or self.burst < 1 or self.presign_ttl_s < 1:
            raise ConfigError("max_upload_bytes, burst and presign_ttl_s must be positive and rate >= 0")
        if self.upload_ttl_s < 1:
            raise ConfigError(f"upload_ttl_s must be a positive number of seconds, got {self.upload_ttl_s}")

    def upload_folder(self) -> Path:
        """The folder of resumable uploads' partial bytes (not created here)."""
        return Path(self.upload_dir).expanduser() if self.upload_dir else home_dir() / "registry-uploads"

    def to_env(self) -> dict[str, str]:
        return {_PREFIX + k.upper(): str(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_env(cls, environ=os.environ) -> "ServerSettings":
        values = {}
        for f in fields(cls):
            raw = environ.get(_PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            values[f.name] = raw == "True" if kind == "bool" else int(raw) if kind == "int" else \
                float(raw) if kind == "float" else raw
        if "db" not in values:
            raise ConfigError(f"set {_PREFIX}DB (and {_PREFIX}BLOBS), or start the server with 'vopstore registry serve'")
        return cls(**values)
