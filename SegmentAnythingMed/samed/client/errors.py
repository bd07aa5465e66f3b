"""What can go wrong talking to the model service, each a :class:`BackendError` with what to do about it."""
from __future__ import annotations

from typing import Optional

from ..core.backend import BackendError


class ServiceUnreachableError(BackendError):
    """No connection to the service (not running, wrong address or port, firewall, TLS problem)."""


class ServiceAuthError(BackendError):
    """The service refused the token (HTTP 401)."""


class ApiVersionError(BackendError):
    """The server is not a samed service, or speaks another API version than this client."""


class ServiceTimeoutError(BackendError):
    """A request got no answer within the client's timeout."""


class ServiceRequestError(BackendError):
    """The service answered a request with an error status; ``status`` and the server's ``detail``."""

    def __init__(self, message: str, status: int, detail: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.detail = detail


class JobFailedError(BackendError):
    """A propagation job ended with an error (the message is the job's)."""


class JobLostError(ServiceRequestError, JobFailedError):
    """The service no longer knows a propagation job (HTTP 404): the replica that ran it stopped or restarted (behind
    a proxy, the job's requests now reach another replica), or the job was deleted or expired. Start it again."""


class JobTimeoutError(BackendError):
    """A propagation job did not finish within the time given to ``result()``; it keeps running."""
