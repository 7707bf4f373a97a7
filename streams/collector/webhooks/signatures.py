"""Each vendor's webhook signature, checked as its own documentation and SDK check it.

- SendGrid (Signed Event Webhook): ECDSA P-256 / SHA-256 over ``timestamp + body``; the
  signature (``X-Twilio-Email-Event-Webhook-Signature``) is base64 DER, the verification key
  the base64 DER public key shown in SendGrid's settings (sendgrid-python's
  ``EventWebhook.verify_signature``).
- Mailgun: ``hex(HMAC-SHA256(signing key, timestamp + token))`` in the body's
  ``signature`` object.
- HubSpot v3: ``base64(HMAC-SHA256(client secret, method + uri + body + timestamp))`` in
  ``X-HubSpot-Signature-v3``, the timestamp (ms) in ``X-HubSpot-Request-Timestamp``
  (hubspot-api-python's ``Signature.get_signature``).

Pure functions: they say whether the bytes were signed by the holder of the secret;
freshness and replays are :mod:`replay`'s job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key


def sendgrid_valid(public_key: str, signature: str, timestamp: str, body: bytes) -> bool:
    """Whether SendGrid signed ``timestamp + body`` with the key behind ``public_key``.

    Example:
        >>> key = ec.generate_private_key(ec.SECP256R1())
        >>> from cryptography.hazmat.primitives import serialization as ser
        >>> public = base64.b64encode(key.public_key().public_bytes(
        ...     ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)).decode()
        >>> sig = base64.b64encode(key.sign(b"1700000000[]", ec.ECDSA(hashes.SHA256()))).decode()
        >>> sendgrid_valid(public, sig, "1700000000", b"[]")
        True
        >>> sendgrid_valid(public, sig, "1", b"[]")
        False
    """
    try:
        key = load_der_public_key(base64.b64decode(public_key))
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """Mailgun's signature of a webhook: hex HMAC-SHA256 of ``timestamp + token``.

    Example:
        >>> mailgun_signature("key", "1700000000", "t" * 50)[:16]
        'eb063216775f4517'
    """
    mac = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256)
    return mac.hexdigest()


def mailgun_valid(signing_key: str, timestamp: str, token: str, signature: str) -> bool:
    """Whether ``signature`` is Mailgun's for ``timestamp`` and ``token``."""
    return hmac.compare_digest(mailgun_signature(signing_key, timestamp, token), signature)


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 signature of a request.

    Example:
        >>> hubspot_v3_signature("s", "POST", "https://x.example/h", b"[]", "1700000000000")[:12]
        'VAY1bfqhg040'
    """
    source = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def hubspot_v3_valid(
    secret: str, method: str, uri: str, body: bytes, timestamp: str, signature: str
) -> bool:
    """Whether ``signature`` is HubSpot's v3 signature of the request."""
    expected = hubspot_v3_signature(secret, method, uri, body, timestamp)
    return hmac.compare_digest(expected, signature)
