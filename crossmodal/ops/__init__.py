"""Point-cloud distances used by the cloud decoder's loss (paper Eq. 8-9).

One public function per op; the device of the inputs picks the implementation.
"""

from crossmodal.ops.chamfer import chamfer_distance, nearest_neighbors
from crossmodal.ops._checks import CloudInputError
from crossmodal.ops.emd import emd, emd_assignment

__all__ = ["CloudInputError", "chamfer_distance", "nearest_neighbors", "emd", "emd_assignment"]
