"""The picture a user looks at: the X-ray with its label and confidence, next to the Grad-CAM heatmap."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

DISPLAY_SIZE = 512


def _label_box(image: Image.Image, text: str, colour: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(14, image.height // 22))
    left, top, right, bottom = draw.textbbox((8, 8), text, font=font)
    draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((8, 8), text, fill=colour, font=font)


def heatmap_overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a 0..1 heatmap, coloured with the 'jet' map and resized to the image, over the X-ray."""
    base = Image.fromarray(pixels).convert("RGB")
    scaled = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(base.size, Image.Resampling.BILINEAR)
    coloured = matplotlib.colormaps["jet"](np.asarray(scaled) / 255.0)[..., :3]
    return Image.blend(base, Image.fromarray(np.uint8(coloured * 255)), alpha)


def draw_boxes(image: Image.Image, boxes, colour=(255, 255, 0)) -> None:
    """Outline `boxes` (an object with `width`, `height` and `boxes` of `[x, y, w, h]` in those pixels)
    on `image`, scaled to its size."""
    sx, sy = image.width / boxes.width, image.height / boxes.height
    draw = ImageDraw.Draw(image)
    for x, y, w, h in boxes.boxes:
        draw.rectangle((x * sx, y * sy, (x + w) * sx, (y + h) * sy), outline=colour, width=max(2, image.width // 200))


def prediction_panel(
    pixels: np.ndarray, heatmap: np.ndarray | None, label: str, confidence: float, positive: bool, boxes=None
):
    """X-ray with `label (confidence)` written on it, as in the notebook, and the heatmap blended beside it;
    annotated `boxes` outlined on both."""
    image = Image.fromarray(pixels).convert("RGB")
    image.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.LANCZOS)
    shown = np.asarray(image)
    panels = [image.copy()]
    _label_box(panels[0], f"{label} ({confidence:.1%})", (255, 80, 80) if positive else (120, 255, 120))
    if heatmap is not None:
        explained = heatmap_overlay(shown, heatmap)
        _label_box(explained, "Grad-CAM", (255, 255, 255))
        panels.append(explained)
    for panel in panels if boxes is not None else []:
        draw_boxes(panel, boxes)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), image.height), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    return canvas
