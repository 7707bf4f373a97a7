"""AES-256-GCM for PII envelopes (the cipher behind ``processors.pii``'s sealer/opener).

Each value gets a fresh 96-bit random nonce; the associated data binds the ciphertext to
its workspace, subject (the person), field and key id, so a sealed value moved to another
field, person or tenant does not open. A wrong or missing key opens to ``None``: after
erasure that is the point.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from leadflow.processors.pii import VERSION, Envelope, associated_data

KEY_BYTES = 32
NONCE_BYTES = 12


def new_key() -> bytes:
    """A fresh random AES-256 key."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def new_kid() -> str:
    """A fresh random key id (64 bits, hex): unique per key, never derived from a person."""
    return secrets.token_hex(8)


def encrypt(
    key: bytes, kid: str, workspace_id: str, subject: str, field: str, plaintext: str
) -> str:
    """Seal ``plaintext`` of ``subject`` as an ``enc:v2:`` envelope string.

    Example:
        >>> k = new_key()
        >>> sealed = encrypt(k, "00ff00ff00ff00ff", "ws", "a1", "email", "ada@example.com")
        >>> sealed.startswith("enc:v2:00ff00ff00ff00ff:"), "ada" in sealed
        (True, False)
    """
    nonce = os.urandom(NONCE_BYTES)
    bound_to = associated_data(VERSION, workspace_id, subject, field, kid)
    data = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), bound_to)
    blob = base64.urlsafe_b64encode(nonce + data).decode("ascii")
    return str(Envelope(kid=kid, blob=blob, version=VERSION))


def decrypt(
    key: bytes | None, workspace_id: str, subject: str, field: str, envelope: Envelope
) -> str | None:
    """The plaintext of ``envelope``, or ``None`` when the key is gone or does not fit.

    ``v1`` envelopes (sealed before the subject was bound) open without it.

    Example:
        >>> from leadflow.processors.pii import parse_envelope
        >>> k = new_key()
        >>> env = parse_envelope(encrypt(k, "0a0a0a0a", "ws", "a1", "email", "ada@example.com"))
        >>> decrypt(k, "ws", "a1", "email", env), decrypt(k, "ws", "a1", "phone", env)
        ('ada@example.com', None)
        >>> decrypt(k, "ws", "a2", "email", env), decrypt(None, "ws", "a1", "email", env)
        (None, None)
    """
    if key is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(envelope.blob.encode("ascii"))
    except ValueError:
        return None
    if len(raw) <= NONCE_BYTES:
        return None
    try:
        plain = AESGCM(key).decrypt(
            raw[:NONCE_BYTES],
            raw[NONCE_BYTES:],
            associated_data(envelope.version, workspace_id, subject, field, envelope.kid),
        )
    except (InvalidTag, ValueError):
        return None
    return plain.decode("utf-8", errors="replace")
