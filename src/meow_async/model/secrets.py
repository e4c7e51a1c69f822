"""Secrets named in a workflow (bearer tokens, HMAC secrets): where they are, never what they are.

A workflow file names an environment variable or a file; the value is read from there when
it is needed, and a missing or empty one is an error naming the variable or file. Which
request headers carry secrets, so that their values are never recorded, is decided here too.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from ..exceptions import ConfigError

__all__ = ["REDACTED", "read_secret", "secret_header"]

#: What is recorded instead of a secret header's value.
REDACTED = "[redacted]"

#: Header names that carry credentials whatever they are called in a workflow.
_SECRET_NAMES = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}
)
#: A header whose name holds one of these words (between dashes) is taken for a secret.
_SECRET_WORDS = frozenset(
    {
        "auth",
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "credential",
        "credentials",
        "session",
        "apikey",
        "key",
    }
)
#: Names with a secret-looking word that are not secrets: an idempotency key is an id.
_NOT_SECRET = frozenset({"idempotency-key"})


@lru_cache(maxsize=256)
def secret_header(name: str) -> bool:
    """Whether a request header's value is a credential, by its name (any case)."""
    name = name.lower()
    if name in _NOT_SECRET:
        return False
    if name in _SECRET_NAMES:
        return True
    return any(word in _SECRET_WORDS for word in re.split(r"[-_]", name))


def read_secret(where: str, prefix: str, env: object, file: object, what: str) -> str | None:
    """The secret from the environment variable ``env`` or the file ``file`` (the settings
    ``<prefix>_env`` and ``<prefix>_file``); None when neither is set."""
    if env is not None:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigError(
                f"environment variable {env} ({what}) is not set",
                where=where,
                field=f"{prefix}_env",
                value=env,
            )
        return value
    if file is not None:
        try:
            with open(os.fspath(file), encoding="utf-8") as f:  # type: ignore[call-overload]
                value = f.read().strip()
        except (OSError, TypeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise ConfigError(
                f"cannot read {what} from {file}: {why}",
                where=where,
                field=f"{prefix}_file",
                value=file,
            ) from None
        if not value:
            raise ConfigError(
                f"{file} ({what}) is empty", where=where, field=f"{prefix}_file", value=file
            )
        return value
    return None
