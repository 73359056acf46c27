"""Who may decide: reviewers from the environment, signed session cookies and CSRF tokens.

    OLDPHOTO_REVIEWERS="alice:pbkdf2_sha256$600000$<salt hex>$<hash hex>;bob:sha256$<hex of a long token>"

Each reviewer is a name and a hash of their password (`oldphoto review hash-password` prints one) or of a long
random token (sha256). Passwords are never stored or compared in clear. A reviewer logs in once (form at
/login); the server then sets a session cookie signed with HMAC-SHA256 ($OLDPHOTO_REVIEW_SECRET, else a random
key per server start: sessions end when the server stops), HttpOnly and SameSite=Strict. Every form that
changes something carries a CSRF token derived from the session's random nonce and checked on POST.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

ENV_REVIEWERS = "OLDPHOTO_REVIEWERS"
ENV_SECRET = "OLDPHOTO_REVIEW_SECRET"
PBKDF2_ITERATIONS = 600_000
SESSION_S = 12 * 3600
COOKIE = "oldphoto_review"


class AuthError(ValueError):
    """A malformed reviewer entry or hash."""


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    """The `pbkdf2_sha256$ITERATIONS$SALT$HASH` line for OLDPHOTO_REVIEWERS (hex salt and hash)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify(spec: str, secret: str) -> bool:
    """True when `secret` matches the hash `spec` (constant-time comparison)."""
    parts = spec.split("$")
    if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
        iterations, salt, want = int(parts[1]), bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
        got = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, iterations)
        return hmac.compare_digest(got, want)
    if parts[0] == "sha256" and len(parts) == 2:
        return hmac.compare_digest(hashlib.sha256(secret.encode("utf-8")).hexdigest(), parts[1].lower())
    raise AuthError("a reviewer hash is pbkdf2_sha256$ITER$SALT$HASH or sha256$HEX")


def parse_reviewers(text: str | None) -> dict[str, str]:
    """name -> hash spec from `name:spec;name:spec` (whitespace and empty entries ignored)."""
    out: dict[str, str] = {}
    for entry in (text or "").replace("\n", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, spec = entry.partition(":")
        if not sep or not name.strip() or not spec.strip():
            raise AuthError(f"{ENV_REVIEWERS}: each entry is NAME:HASH (got {entry.split(':')[0]!r}...)")
        if spec.split("$")[0] not in ("pbkdf2_sha256", "sha256"):
            raise AuthError(f"{ENV_REVIEWERS}: the hash of {name.strip()!r} is not pbkdf2_sha256$... or sha256$...; "
                            "passwords are never given in clear (use `oldphoto review hash-password`)")
        out[name.strip()] = spec.strip()
    return out


@dataclass
class Session:
    reviewer: str          # "" = not logged in
    nonce: str
    expires: int


class Sessions:
    """Signed session cookies and the CSRF tokens derived from them."""

    def __init__(self, key: bytes | None = None, reviewers: dict[str, str] | None = None) -> None:
        env_key = os.environ.get(ENV_SECRET)
        self.key = key or (env_key.encode() if env_key else secrets.token_bytes(32))
        self.reviewers = reviewers if reviewers is not None else parse_reviewers(os.environ.get(ENV_REVIEWERS))

    def _sign(self, payload: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    def new(self, reviewer: str = "") -> tuple[Session, str]:
        s = Session(reviewer, secrets.token_urlsafe(16), int(time.time()) + SESSION_S)
        return s, self.encode(s)

    def encode(self, s: Session) -> str:
        name = base64.urlsafe_b64encode(s.reviewer.encode()).decode().rstrip("=")
        payload = f"{name}.{s.nonce}.{s.expires}"
        return f"{payload}.{self._sign(payload)}"

    def decode(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 3:
            return None
        name, nonce, expires, sig = cookie.split(".")
        if not hmac.compare_digest(sig, self._sign(f"{name}.{nonce}.{expires}")):
            return None
        if not expires.isdigit() or int(expires) < time.time():
            return None
        reviewer = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        if reviewer and reviewer not in self.reviewers:      # removed from the environment since
            return None
        return Session(reviewer, nonce, int(expires))

    def csrf(self, s: Session) -> str:
        return self._sign(f"csrf.{s.nonce}")

    def check_csrf(self, s: Session | None, token: str | None) -> bool:
        return s is not None and bool(token) and hmac.compare_digest(self.csrf(s), token or "")

    def login(self, name: str, secret: str) -> bool:
        spec = self.reviewers.get(name)
        if spec is None:
            verify(hash_password("x", 1000), secret)           # same work whether or not the name exists
            return False
        return verify(spec, secret)
