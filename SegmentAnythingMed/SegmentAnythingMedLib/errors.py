"""Errors of the Slicer bridge. Each message says which node or view is the problem and what to do."""


class BridgeError(ValueError):
    """A node, view or setting that the bridge cannot use as it is."""


class ObliqueViewError(BridgeError):
    """The slice view is not aligned with the source volume's voxel grid."""


# errors whose message says what to do (samed's PromptError, GeometryError... are ValueErrors)
USER_ERRORS = (BridgeError, ValueError, TimeoutError)


def describe_error(exc: BaseException) -> str:
    """The text a person sees for an error raised by a session call."""
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
