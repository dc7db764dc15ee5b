"""Credentials masked before anything is logged or hashed.

URL userinfo (``https://user:pass@host``) and query values of keys such as ``key=``, ``token=``, ``sig=`` become
``***``; a field whose own name says secret (``extra_body.api_key``) is masked whole. Names that end in ``_env``
(``api_key_env``) are kept: they name an environment variable, not a secret.

    redact("https://bob:pw@host/v1?sig=abc")        # 'https://***@host/v1?sig=***'
    redacted({"extra_body": {"api_key": "sk-1"}})     # {'extra_body': {'api_key': '***'}}
"""
from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET_NAME = re.compile(r"(^|[_.\-])(api[_-]?key|apikey|key|token|access[_-]?token|secret|password|passwd|pwd|"
                          r"auth|authorization|credential|credentials|signature|sig|session[_-]?token|"
                          r"x-amz-signature|x-amz-credential|x-amz-security-token)$", re.I)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<userinfo>[^/@\s?#]+)@", re.I)
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def secret_name(name: str) -> bool:
    """Whether a field or query key called ``name`` holds a secret."""
    return bool(_SECRET_NAME.search(name)) and not name.lower().endswith("_env")


def redact(value: Any) -> Any:
    """``value`` with credentials masked (strings only; other types unchanged)."""
    if not isinstance(value, str):
        return value
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", value)
    return _QUERY_PAIR.sub(lambda m: f"{m['sep']}{m['key']}={MASK if secret_name(m['key']) else m['value']}", out)


def redacted(value: Any) -> Any:
    """``value`` (nested dicts and lists) with every secret-named field masked and every string redacted."""
    if isinstance(value, dict):
        return {k: MASK if secret_name(str(k)) and v not in (None, "") else redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    return redact(value)
