"""Cache folder, stable hashing and atomic writes shared by the zoo and the LOO store."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

ENV_VAR = "INFLUENCE_WIDGETS_CACHE"


def cache_dir(create: bool = True) -> Path:
    """The cache folder: ``$INFLUENCE_WIDGETS_CACHE`` if set, else the user's cache directory."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("influence_widgets"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def stable_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal settings give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.dtype | torch.device):
        return str(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(f"cannot put {type(o).__name__} into a cache key")


def hash_settings(obj: Any, length: int = 16) -> str:
    """A short sha256 hex digest of the settings' stable JSON."""
    return hashlib.sha256(stable_json(obj).encode()).hexdigest()[:length]


def hash_tensors(*tensors: torch.Tensor, length: int = 16) -> str:
    """A short sha256 hex digest of tensors' shapes, dtypes and values (device independent)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:length]


def digest_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """The full sha256 hex digest of named tensors: names sorted, then each name, dtype, shape
    and raw bytes (device independent; any dtype). Equal digests mean bit-identical tensors."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | Path) -> Any:
    """Load tensors only (``weights_only=True``): never executes pickled code."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
