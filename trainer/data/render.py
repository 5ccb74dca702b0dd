"""Pure numpy drawing for the synthetic task: coloured shapes on a dark background.

Kept apart from the video writer so the demo can render frames (or single
images for static pretraining) without touching PyAV.
"""

from __future__ import annotations

import numpy as np

COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "white": (240, 240, 240), "purple": (160, 60, 210), "orange": (250, 140, 30), "cyan": (40, 220, 220),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (20, 20, 20)


def blank(size: int, colour: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """A (size, size, 3) uint8 canvas filled with ``colour`` (the pretraining images' background by default)."""
    return np.broadcast_to(np.array(colour, np.uint8), (size, size, 3)).copy()


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean (size, size) mask of ``shape`` centred at (cx, cy), all in pixels.

    Triangles point up, so a flipped frame is still the same shape (only motion direction changes).
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "triangle":
        # apex at the top: half-width grows linearly from 0 (top) to radius (bottom)
        inside_y = (dy >= -radius) & (dy <= radius * 0.8)
        return inside_y & (np.abs(dx) <= (dy + radius) / 1.8)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def draw(canvas: np.ndarray, colour: str, shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Paint one shape onto ``canvas`` in place (coordinates as fractions of the side) and return it."""
    size = canvas.shape[0]
    mask = shape_mask(shape, size, cx * size, cy * size, radius * size)
    canvas[mask] = COLOURS[colour]
    return canvas
