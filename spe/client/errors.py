"""The client's one exception root: every failure of a call to the hub is a `ClientError`
with the words to act on, never a raw httpx exception.

- `Refused`: the hub answered with an error; `status` and `reason` (the API's `detail`, in
  words).
- `Unreachable`: no answer at all (nothing listening, TLS not trusted, a timeout).
- `InvalidInput`: refused here, before anything was sent (a malformed query, a missing
  code folder).
- `NotConfigured`: no hub or no token was given, and none is in the environment.
"""

from __future__ import annotations

import httpx

__all__ = ["ClientError", "InvalidInput", "NotConfigured", "Refused", "Unreachable",
           "detail_of"]


class ClientError(Exception):
    """A call that did not give what was asked; `str()` says why in one sentence."""

    status: int | None = None

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        return self.reason


class InvalidInput(ClientError):
    """Bad input, refused before anything was sent."""


class NotConfigured(ClientError):
    """No hub, or no token: `what` names which, `reason` why none was found."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(reason)
        self.what = what


class Refused(ClientError):
    """The hub (or `who`) answered with an HTTP error: `status`, and `reason`, the API's
    `detail` in words."""

    def __init__(self, status: int, reason: str, who: str = "the hub") -> None:
        super().__init__(reason, status)
        self.who = who

    def __str__(self) -> str:
        return f"{self.who} refused: HTTP {self.status}: {self.reason}"


#: What the client says after a reason for an unreachable hub (the CLI names its options).
POINT = "give Client(hub=URL) or set SPE_HUB_URL (the demo's var/demo/spe.env sets it)"


class Unreachable(ClientError):
    """No answer from the hub at `url`: `kind` is `tls`, `connect`, `timeout` or `other`;
    `text` is the transport's own words."""

    def __init__(self, url: str, exc: httpx.HTTPError | OSError) -> None:
        self.url = url
        self.text = str(exc) or exc.__class__.__name__
        self.error = exc.__class__.__name__
        if "CERTIFICATE_VERIFY_FAILED" in self.text or "SSL" in self.text:
            self.kind = "tls"
        elif isinstance(exc, httpx.ConnectError):
            self.kind = "connect"
        elif isinstance(exc, httpx.TimeoutException):
            self.kind = "timeout"
        else:
            self.kind = "other"
        super().__init__(self.explain(POINT))

    def explain(self, point: str) -> str:
        """Why the hub did not answer, ending with `point` (how to name another hub)."""
        url, text = self.url, self.text
        if self.kind == "tls":
            return (f"the hub at {url} has a TLS certificate this machine does not trust "
                    f"({text}): set SSL_CERT_FILE to the CA bundle (PEM) that signed it")
        if self.kind == "connect":
            return f"cannot reach the hub at {url} ({text}): no hub is running there; {point}"
        if self.kind == "timeout":
            return f"the hub at {url} did not answer in time ({self.error})"
        return f"the hub at {url}: {self.error}: {text}; {point}"


def detail_of(resp: httpx.Response) -> str:
    """The API's `detail`: a message, or FastAPI's list of field errors in words."""
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text[:300]
    if isinstance(detail, list):
        from spe.errors import in_words

        return in_words([e if isinstance(e, dict) else {"msg": str(e)} for e in detail])
    return str(detail)
