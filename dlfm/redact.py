"""The one redaction function for every URI dlfm prints, logs or tags (no mlflow import here).

Passwords reach dlfm inside database and server URLs (``postgresql://user:secret@host/db``).
Users write them raw or percent-encoded, and a raw ``@`` or ``/`` in the password is common, so a
regex up to the first ``@`` or ``/`` leaks the rest. The rule here: the userinfo of a URL ends at
the *last* ``@`` before the query string, and everything between the first ``:`` of the userinfo
and that ``@`` is the password. Drivers also echo fragments of a mis-parsed password (libpq says
``host name "ssW0rd@127.0.0.1"``), so :func:`scrub` removes the password's pieces too.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote

__all__ = ["MASK", "redact", "redact_uri", "uri_password", "has_secret", "scrub", "RedactingStream", "SECRET_QUERY_KEYS",
           "SECRET_ENV_VARS"]

MASK = "***"
# query-string keys whose values are secrets (SQLAlchemy/libpq/mysql/S3 spellings); a key that *ends* in one of
# these words is one too (sslpassword, access_token, client_secret, api_key, X-Amz-Signature, X-Amz-Credential)
SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "key", "signature", "credential")
# environment variables that hold a secret or a URI with one; scrub() masks their values everywhere
SECRET_ENV_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_BACKEND_STORE_URI",
                   "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "OPTUNA_STORAGE", "PGPASSWORD",
                   "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SCHEME = re.compile(r"^[A-Za-z][\w+.\-]*://")
_SECRET_QUERY = re.compile(r"(?i)([?&;][\w.\-]*(?:%s)=)[^&#;\s'\"]*" % "|".join(SECRET_QUERY_KEYS))
# AWS-style key pairs anywhere in a text: an access key id (AKIA…/ASIA…) and a secret named by its key
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")
_AWS_SECRET = re.compile(r"(?i)(aws_secret_access_key|aws_session_token|secret_access_key|secretaccesskey)(\s*[=:]\s*['\"]?)"
                         r"[A-Za-z0-9/+=]{8,}")
_ANY_URL = re.compile(r"[A-Za-z][\w+.\-]*://[^\s'\"<>]+")
_MIN_FRAGMENT = 3  # shorter pieces of a password are too common to scrub without mangling messages


def _split(uri: str) -> tuple[str, str, str, str] | None:
    """(scheme://, user, password, rest starting with @) or None when the URI carries no password."""
    match = _SCHEME.match(uri)
    if not match:
        return None
    head = uri[match.end():]
    before_query = head.split("?", 1)[0]
    at = before_query.rfind("@")
    if at < 0:
        return None
    userinfo = before_query[:at]
    user, colon, password = userinfo.partition(":")
    if not colon or "/" in user:  # e.g. sqlite:////tmp/a:b@c.db has a path, not a userinfo
        return None
    return match.group(0), user, password, head[at:]


def uri_password(uri: str) -> str | None:
    """The password of a URI as written (possibly percent-encoded), or None."""
    parts = _split(uri or "")
    return parts[2] if parts and parts[2] else None


def redact_uri(uri: str) -> str:
    """``scheme://user:anything@host/db?password=x`` → ``scheme://user:***@host/db?password=***``."""
    if not uri:
        return uri
    parts = _split(uri)
    if parts is not None:
        scheme, user, _password, rest = parts
        uri = f"{scheme}{user}:{MASK}{rest}"
    return _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, uri)


def redact(text: str) -> str:
    """``text`` with every secret it spells out masked: URL passwords, secret query values, AWS key pairs.

    The one redactor every param, tag, note, description, artifact text and log line dlfm writes goes
    through (``scrub`` adds the secrets it is told about and those of the environment).
    """
    if not text or not isinstance(text, str):
        return text
    text = _ANY_URL.sub(lambda m: redact_uri(m.group(0)), text)
    text = _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, text)  # a bare `host/db?password=x` without a scheme
    text = _AWS_SECRET.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _AWS_KEY_ID.sub(MASK, text)


def has_secret(text: str) -> bool:
    """True when ``text`` spells out a secret that :func:`redact` would mask (refuse it as a -P value)."""
    return bool(text) and redact(text) != text


class RedactingStream:
    """A text stream that writes ``redact(text)`` through to ``stream`` (stdout/stderr of an entry point)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(redact(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _forms(secret: str) -> set[str]:
    """A secret as written, percent-decoded and percent-encoded, and its pieces around @ / : (drivers split there)."""
    forms = {secret, unquote(secret), quote(unquote(secret), safe="")}
    for form in list(forms):
        forms.update(piece for piece in re.split(r"[@/:]", form) if len(piece) >= _MIN_FRAGMENT)
    return {form for form in forms if form}


def scrub(text: str, *uris_or_secrets: str | None, env=os.environ) -> str:
    """``text`` with every given URI redacted and every given password (and its forms) replaced by ***.

    Pass URIs (their password is found) or bare secrets. The values of SECRET_ENV_VARS are always
    scrubbed too, so a driver message echoing them never reaches the terminal or a run tag.
    """
    if not text:
        return text
    secrets: set[str] = set()
    from_env = [env.get(name) for name in SECRET_ENV_VARS]
    for item in [*uris_or_secrets, *(value for value in from_env if value and len(value) >= _MIN_FRAGMENT)]:
        if not item:
            continue
        if _SCHEME.match(item):
            text = text.replace(item, redact_uri(item))
            password = uri_password(item)
            if password:
                secrets |= _forms(password)
        else:
            secrets |= _forms(item)
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: a fragment never half-masks a whole
        text = text.replace(secret, MASK)
    # any other URL in the text (e.g. a driver echoing the DSN) loses its password too, and so on: the one redactor
    return redact(text)
