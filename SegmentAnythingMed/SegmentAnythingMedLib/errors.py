"""Errors of the Slicer bridge. Each message says which node or view is the problem and what to do."""


class BridgeError(ValueError):
    """A node, view or setting that the bridge cannot use as it is."""


class ObliqueViewError(BridgeError):
    """The slice view is not aligned with the source volume's voxel grid."""
