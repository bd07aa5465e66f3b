"""The torch-free client of the samed model service (standard library + numpy; runs in 3D Slicer's Python).

* :class:`HttpBackend`: the service as a :class:`samed.core.backend.Backend` (encode, decode, segment), plus
  ``start_propagation`` for server-side propagation jobs.
* :func:`start_propagation`: a propagation job with any backend (on the service, or in a thread here), all with
  one interface: ``job.progress()``, ``job.cancel()``, ``job.result(timeout)``.
* Errors (all :class:`samed.core.backend.BackendError`): :class:`ServiceUnreachableError`,
  :class:`ServiceAuthError`, :class:`ApiVersionError`, :class:`ServiceTimeoutError`, :class:`ServiceRequestError`,
  :class:`JobFailedError`, :class:`JobLostError`, :class:`JobTimeoutError`.
* Routing: every request about a slice's embedding carries ``X-Samed-Route: <its key>``, every request about a
  job the job's route, so a consistent-hash proxy in front of several replicas keeps them on one (docs/deploy.md).
"""
from __future__ import annotations

from .errors import (ApiVersionError, JobFailedError, JobLostError, JobTimeoutError, ServiceAuthError,
                     ServiceRequestError, ServiceTimeoutError, ServiceUnreachableError)
from .http import ROUTE_HEADER, HttpBackend, RemotePropagationJob
from .jobs import JobProgress, PropagationJob, ThreadPropagationJob, needed_slab, start_propagation

__all__ = ["HttpBackend", "ROUTE_HEADER", "RemotePropagationJob", "JobProgress", "PropagationJob",
           "ThreadPropagationJob", "needed_slab", "start_propagation", "ApiVersionError", "JobFailedError",
           "JobLostError", "JobTimeoutError",
           "ServiceAuthError", "ServiceRequestError", "ServiceTimeoutError", "ServiceUnreachableError"]
