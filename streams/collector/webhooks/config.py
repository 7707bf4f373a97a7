r"""Which workspace takes which vendor's webhooks, with the secret that checks them.

The file (``LEADFLOW_COLLECTOR_WEBHOOKS_FILE``, default ``<data dir>/collector/webhooks.json``,
mode 0600) maps workspace -> vendor -> settings::

    {"acme": {"sendgrid": {"public_key": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE..."},
              "mailgun": {"signing_key": "key-..."},
              "hubspot": {"client_secret": "...",
                          "url": "https://collector.acme.example/webhooks/hubspot/acme"},
              "postmark": {"username": "postmark", "password_sha256": "<hex sha256>"},
              "ses": {"topic_arn": "arn:aws:sns:eu-west-1:123456789012:ses-events",
                      "certificate": "-----BEGIN CERTIFICATE-----\n..."}}}

HubSpot signs the URL it called: ``url`` is that URL when a proxy stands in front of the
collector (without it the request's own URL is used). Mailgun's signing key and HubSpot's
client secret are HMAC keys and must be stored as they are; hence the file mode. Postmark's
password is stored as its SHA-256 only. ``ses`` pins SNS's signing certificate (PEM, several
concatenated while AWS rotates it) and names the one topic accepted. A running collector
re-reads the file when it changes; a wrong entry makes every webhook a logged 500 until it is
fixed (loud, never silently open).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from leadflow.processors.errors import LeadflowError
from leadflow.processors.workspace_id import RULE, is_workspace_id

VENDORS = ("sendgrid", "mailgun", "hubspot", "postmark", "ses")
REQUIRED: dict[str, tuple[str, ...]] = {
    "sendgrid": ("public_key",),
    "mailgun": ("signing_key",),
    "hubspot": ("client_secret",),
    "postmark": ("username", "password_sha256"),
    "ses": ("certificate", "topic_arn"),
}
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class WebhookConfigError(LeadflowError):
    """The webhooks file cannot be read or names a secret wrongly."""


@dataclass
class WebhookSecrets:
    """The webhooks file, read lazily and again whenever it changes on disk."""

    path: Path
    _stamp: tuple[int, int, int] | None = None
    _data: dict[str, Any] = field(default_factory=dict)

    def lookup(self, workspace_id: str, vendor: str) -> dict[str, str] | None:
        """The vendor's settings for ``workspace_id``, or ``None`` when not configured."""
        self._refresh()
        found = self._data.get(workspace_id, {}).get(vendor)
        return found if isinstance(found, dict) else None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._data = None, {}
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise WebhookConfigError(f"{self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise WebhookConfigError(f"{self.path}: expected an object of workspaces")
        for workspace, vendors in data.items():
            if not is_workspace_id(workspace):
                raise WebhookConfigError(f"{self.path}: workspace id {workspace!r} {RULE}")
            for vendor, conf in (vendors or {}).items():
                if vendor not in VENDORS or not isinstance(conf, dict):
                    raise WebhookConfigError(f"{self.path}: {workspace}.{vendor} is not a vendor")
                for name in REQUIRED[vendor]:
                    if not isinstance(conf.get(name), str) or not conf[name]:
                        raise WebhookConfigError(f"{self.path}: {workspace}.{vendor} needs {name}")
                problem = _problem(vendor, conf)
                if problem:
                    raise WebhookConfigError(f"{self.path}: {workspace}.{vendor}: {problem}")
        self._stamp, self._data = stamp, data


def _problem(vendor: str, conf: dict[str, str]) -> str | None:
    """What is wrong with a vendor's settings beyond a missing name (caught at load)."""
    if vendor == "postmark" and not _HEX_SHA256.fullmatch(conf["password_sha256"]):
        return (
            "password_sha256 is the hex SHA-256 of the password, not the password "
            "(python -c 'import hashlib,getpass; print(hashlib.sha256(getpass.getpass()"
            ".encode()).hexdigest())')"
        )
    if vendor == "ses":
        try:
            x509.load_pem_x509_certificates(conf["certificate"].encode())
        except ValueError:
            return "certificate is not a PEM certificate (the one at SNS's SigningCertURL)"
    return None
