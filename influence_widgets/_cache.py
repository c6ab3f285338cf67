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


# ----------------------------------------------------------------------------- model code

#: ``nn.Module`` bookkeeping that says nothing about what the module computes.
_MODULE_INTERNALS = frozenset({
    "_parameters", "_buffers", "_modules", "training", "_non_persistent_buffers_set",
    "_is_full_backward_hook", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_backward_hooks",
    "_backward_pre_hooks", "_compiled_call_impl",
})
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
          "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")
_LIBRARIES = ("torch", "numpy", "scipy", "builtins", "functools", "math", "typing")


def _from_library(obj: Any) -> bool:
    mod = getattr(obj, "__module__", None) or ""
    return mod.split(".")[0] in _LIBRARIES


def _code_digest(code: Any, h: Any, seen: set[int], globals_: Mapping[str, Any] | None,
                 depth: int) -> None:
    """Feed what decides a code object's behaviour into ``h``: bytecode, constants (nested code
    objects recursively), names; and the code of plain functions it calls by global name (not
    library ones), ``depth`` levels down."""
    if id(code) in seen:
        return
    seen.add(id(code))
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            _code_digest(c, h, seen, globals_, depth)
        else:
            h.update(repr(c).encode())
    if globals_ is None or depth <= 0:
        return
    for name in code.co_names:
        g = globals_.get(name)
        if callable(g) and hasattr(g, "__code__") and not _from_library(g):
            h.update(f"global {name}|".encode())
            _code_digest(g.__code__, h, seen, getattr(g, "__globals__", None), depth - 1)


def _callable_digest(fn: Any, h: Any, seen: set[int]) -> None:
    fn = getattr(fn, "__func__", fn)  # bound methods, classmethods
    if isinstance(fn, staticmethod | classmethod):
        fn = fn.__func__
    if isinstance(fn, property):
        for part in (fn.fget, fn.fset):
            if part is not None:
                _callable_digest(part, h, seen)
        return
    code = getattr(fn, "__code__", None)
    if code is None:
        h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
                 .encode())
        return
    _code_digest(code, h, seen, getattr(fn, "__globals__", None), depth=3)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            _value_digest(cell.cell_contents, h, seen)
        except ValueError:  # an empty cell
            h.update(b"<empty cell>")


def _value_digest(v: Any, h: Any, seen: set[int]) -> None:
    if isinstance(v, torch.Tensor):
        h.update(hash_tensors(v).encode())
    elif isinstance(v, bool | int | float | str | bytes | type(None) | torch.dtype | torch.device):
        h.update(repr(v).encode())
    elif isinstance(v, tuple | list):
        h.update(f"{type(v).__name__}{len(v)}|".encode())
        for x in v:
            _value_digest(x, h, seen)
    elif isinstance(v, Mapping):
        h.update(f"dict{len(v)}|".encode())
        for k in sorted(v, key=repr):
            h.update(repr(k).encode())
            _value_digest(v[k], h, seen)
    elif callable(v) and not isinstance(v, type) and not isinstance(v, torch.nn.Module):
        _callable_digest(v, h, seen)
    else:
        h.update(f"<{type(v).__module__}.{type(v).__qualname__}>".encode())


def module_fingerprint(module: torch.nn.Module, length: int = 16) -> str:
    """A digest of what a module *computes*, beside its parameters and buffers: for every
    submodule, its class and the code of every method its classes define (nn.Module's own and
    other library classes by name and torch version), its plain attributes (numbers, strings,
    unregistered tensors, functions by their code) and the code of its forward hooks.

    Two modules with the same fingerprint and the same parameters and buffers compute the same
    function: a ``forward`` edited in a notebook cell (same class name, same weights), or a
    changed ``self.scale``, gives another fingerprint, so a store keyed on it recomputes.
    """
    h = hashlib.sha256(f"torch {torch.__version__}|".encode())
    seen: set[int] = set()
    classes_done: set[type] = set()
    for name, m in module.named_modules():
        cls = type(m)
        h.update(f"module {name}|{cls.__module__}.{cls.__qualname__}|".encode())
        if cls not in classes_done:
            classes_done.add(cls)
            for klass in cls.__mro__:
                if klass is torch.nn.Module or klass is object or _from_library(klass):
                    continue
                for attr, value in sorted(vars(klass).items()):
                    if callable(value) or isinstance(value, staticmethod | classmethod | property):
                        h.update(f"def {klass.__qualname__}.{attr}|".encode())
                        _callable_digest(value, h, seen)
        for attr, value in sorted(vars(m).items()):
            if attr in _MODULE_INTERNALS or attr in _HOOKS:
                continue
            h.update(f"attr {attr}|".encode())
            _value_digest(value, h, seen)
        for hooks in _HOOKS:
            for hook in getattr(m, hooks, {}).values():
                h.update(f"hook {hooks}|".encode())
                _value_digest(hook, h, seen)
    return h.hexdigest()[:length]
