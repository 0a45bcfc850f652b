"""Example reconstructions as one PNG: a row per victim image, original then one column per setting."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

_HEADER_PX = 20
_GAP_PX = 2
_WHITE = (255, 255, 255)


def _ascii(label: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return label.replace("ε", "eps").replace("∞", "inf").encode("ascii", "replace").decode()


def _to_bgr(image: torch.Tensor) -> np.ndarray:
    """``(3, S, S)`` RGB in [0, 1] -> ``(S, S, 3) uint8`` BGR."""
    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(rgb[..., ::-1])


def compose_grid(originals: torch.Tensor, columns: list[tuple[str, torch.Tensor, list[float]]]) -> np.ndarray:
    """``(N, 3, S, S)`` originals and ``(label, (N, 3, S, S) reconstructions, per-image SSIM)`` columns
    -> ``(20 + N·(S+2), (1 + len(columns))·(S+2), 3) uint8`` BGR, titled, each cell stamped with its SSIM.
    """
    n, _, size, _ = originals.shape
    cell = size + _GAP_PX
    grid = np.zeros((_HEADER_PX + n * cell, (1 + len(columns)) * cell, 3), np.uint8)
    scale = max(0.3, size / 400)
    titles = ["original", *(label for label, _, _ in columns)]
    for col, title in enumerate(titles):
        cv2.putText(grid, _ascii(title), (col * cell + 2, _HEADER_PX - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, _WHITE, 1)
    for row in range(n):
        top = _HEADER_PX + row * cell
        grid[top : top + size, :size] = _to_bgr(originals[row])
        for col, (_, images, scores) in enumerate(columns, start=1):
            left = col * cell
            grid[top : top + size, left : left + size] = _to_bgr(images[row])
            stamp = f"{scores[row]:.2f}"
            cv2.putText(grid, stamp, (left + 2, top + size - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3)
            cv2.putText(grid, stamp, (left + 2, top + size - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, _WHITE, 1)
    return grid


def write_grid(path: Path, originals: torch.Tensor, columns: list[tuple[str, torch.Tensor, list[float]]]) -> Path:
    """Compose the grid and write it to ``path`` (PNG), creating the folder; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), compose_grid(originals, columns)):
        raise OSError(f"could not write the reconstruction grid to {path}")
    return path
