"""A tiny ImageNet-style image folder of coloured shapes, so the group study runs offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._cache import cache_dir

SHAPES = ("circle", "square", "triangle", "cross")


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r * 0.8) & (np.abs(dy) <= r * 0.8)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    return (np.abs(dx) <= r * 0.3) | (np.abs(dy) <= r * 0.3)


def _image(shape: str, channel: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One noisy image: a ``shape`` whose colour leans to ``channel``, on a random background."""
    background = rng.uniform(0.0, 0.5, size=3)
    img = np.clip(background + rng.normal(0.0, 0.12, size=(size, size, 3)), 0.0, 1.0)
    r = rng.uniform(0.2, 0.35) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    mask = _shape_mask(shape, size, cx, cy, r)
    colour = rng.uniform(0.3, 0.6, size=3)
    colour[channel] = rng.uniform(0.8, 1.0)
    img[mask] = np.clip(colour + rng.normal(0.0, 0.05, size=(mask.sum(), 3)), 0.0, 1.0)
    return (img * 255).astype(np.uint8)


def synthetic_image_folder(root: str | os.PathLike | None = None, *, n_classes: int = 3,
                           per_class: int = 10, size: int = 32, seed: int = 0) -> Path:
    """Write ``root/<shape>/<i>.png`` (``n_classes`` shapes x ``per_class`` noisy images; each
    class's shapes lean to one colour channel, so a small network can learn them).

    The default root is under the cache folder and named after the settings; an existing
    complete folder is reused. Returns the root, ready for ``datasets.image_folder(root)``.
    """
    from PIL import Image

    if not 2 <= n_classes <= len(SHAPES) or per_class < 2:
        raise ValueError(f"need 2 <= n_classes <= {len(SHAPES)} and per_class >= 2, "
                         f"got n_classes={n_classes}, per_class={per_class}")
    name = f"shapes-v2-c{n_classes}-n{per_class}-s{size}-seed{seed}"
    root = Path(root) if root is not None else cache_dir() / "synthetic" / name
    rng = np.random.default_rng(seed)
    for c, shape in enumerate(SHAPES[:n_classes]):
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _image(shape, c % 3, size, rng)
            path = folder / f"{i:03d}.png"
            if not path.exists():
                tmp = folder / f".{i:03d}.tmp.png"
                Image.fromarray(img).save(tmp)
                os.replace(tmp, path)
    return root
