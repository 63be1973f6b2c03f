"""Bearer tokens: JWTs signed with RS256 or ES256, checked for key, audience and expiry.

The embedded deployment makes its own ES256 key pair on first start and issues party tokens with
it; further issuers are trusted by adding their public keys. The party is the token's ``sub``; its
rights are the ``scope`` claim.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from deconfliction.core.errors import Forbidden, Unauthenticated

READ = "strategic.read"
WRITE = "strategic.write"
ADMIN = "admin"
DEFAULT_SCOPES = (READ, WRITE)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what the token lets it do."""

    party_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and ADMIN not in self.scopes:
            raise Forbidden(f"The token lacks the '{scope}' scope.", code="missing_scope")


def _algorithm(key: PublicKey | PrivateKey) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError("Only P-256 elliptic-curve keys (ES256) are supported.")
        return "ES256"
    raise ValueError("Keys must be RSA (RS256) or P-256 EC (ES256).")


def load_or_create_signing_key(path: Path) -> PrivateKey:
    """The deployment's private key; made (ES256, mode 0600) if the file does not exist yet."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: not an RSA or EC private key.")
        _algorithm(key)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    return key


def parse_trusted_key(entry: str) -> tuple[str, PublicKey]:
    """``PARTY_ID=path/to/key.pem``: a public key allowed to sign tokens for that party only."""
    party, sep, path = entry.partition("=")
    if not sep or not party.strip() or not path.strip():
        raise ValueError(
            f"Trusted key {entry!r}: write it as PARTY_ID=path/to/public-key.pem (an outside "
            "issuer may only speak for the one party it belongs to)."
        )
    return party.strip(), load_public_key(Path(path.strip()))


def load_public_key(path: Path) -> PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"{path}: not an RSA or EC public key.")
    _algorithm(key)
    return key


class TokenAuthority:
    """Issues tokens with one private key and verifies tokens against a set of public keys."""

    def __init__(
        self,
        signing_key: PrivateKey | None,
        trusted: list[tuple[str, PublicKey]],
        *,
        audience: str,
        issuer: str,
        leeway_s: float = 30.0,
    ) -> None:
        """``trusted``: (party, key) pairs; an outside key speaks for its one party only."""
        self._signing_key = signing_key
        self._verifiers: list[tuple[PublicKey, str, str | None]] = [
            (k, _algorithm(k), party) for party, k in trusted
        ]
        if signing_key is not None:
            self._verifiers.insert(0, (signing_key.public_key(), _algorithm(signing_key), None))
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.cache_size = 10_000
        self._verified: dict[str, tuple[Principal, float]] = {}

    def issue(
        self,
        party_id: str,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        lifetime_s: float = 365 * 86_400.0,
        now: float | None = None,
    ) -> str:
        if self._signing_key is None:
            raise RuntimeError("This deployment has no signing key.")
        now = time.time() if now is None else now
        claims = {
            "sub": party_id,
            "aud": self.audience,
            "iss": self.issuer,
            "iat": int(now),
            "exp": int(now + lifetime_s),
            "scope": " ".join(scopes),
        }
        return jwt.encode(claims, self._signing_key, algorithm=_algorithm(self._signing_key))

    def verify(self, token: str) -> Principal:
        """The caller behind a token, or Unauthenticated with the reason.

        A signature check costs ~0.2 ms (ES256), more than the rest of a typical request, so a
        verified token is remembered until it expires; only the expiry is checked again.
        """
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires + self.leeway_s:
                return principal
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= self.cache_size:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        reason = "The token is not signed by a trusted key."
        for key, algorithm, bound in self._verifiers:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "sub", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("The token has expired.", code="token_expired") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated(
                    f"The token is not meant for this service (audience must be "
                    f"'{self.audience}').",
                    code="wrong_audience",
                ) from None
            except jwt.InvalidAlgorithmError:
                continue
            except jwt.PyJWTError as exc:
                reason = f"The token is invalid: {exc}."
                if isinstance(exc, jwt.DecodeError):
                    break
                continue
            scope = claims.get("scope", "")
            scopes = frozenset(scope.split() if isinstance(scope, str) else [])
            if bound is not None:
                # A party's own issuer vouches for that party, nothing more: no other `sub`,
                # and never the service's own administration.
                if str(claims["sub"]) != bound:
                    raise Unauthenticated(
                        "The token's issuer may only speak for its own party.",
                        code="invalid_token",
                    )
                scopes = scopes - {ADMIN}
            return Principal(str(claims["sub"]), scopes), float(claims["exp"])
        raise Unauthenticated(reason, code="invalid_token")
