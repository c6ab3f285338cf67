"""Device and dtype resolution: CUDA when available, CPU otherwise; never a hard CUDA requirement."""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" picks CUDA when available; asking for CUDA without one is a clear error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a name such as 'cpu' or 'cuda', a torch.device or "
                        f"None, got {type(device).__name__} {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' (or 'cuda:0', ...), or "
                         "None to pick CUDA when available") from None
    if dev.type == "meta":
        raise ValueError("device='meta' holds shapes but no values, so nothing can be trained "
                         "or estimated on it; use 'cpu' or 'cuda' (or None)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported here; use 'cpu' or 'cuda' "
                         "(or None to pick CUDA when available)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was asked for but CUDA is not available here; "
            "pass device='cpu' (or None to pick automatically)."
        )
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).replace("torch.", "")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
