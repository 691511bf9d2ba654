"""One JSON `default=` for NumPy values, used wherever rows are serialised."""
from __future__ import annotations

import numpy as np


def numpy_default(o):
    """`json.dumps(..., default=numpy_default)`: NumPy scalars and arrays as Python numbers and lists."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
