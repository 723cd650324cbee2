"""Class names and colours (CamVid 11 + void, or generated for any class count) and overlays."""
from pathlib import Path
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np

from cloudseg_ros.core.metrics import IGNORE_INDEX

# The 12 rows of camvid11/classes.txt (id = row index); void is black so overlays skip it.
_CAMVID_ROWS = (
    ('Sky', (128, 128, 128)),
    ('Building', (128, 0, 0)),
    ('Pole', (192, 192, 128)),
    ('Road', (128, 64, 128)),
    ('Pavement', (60, 40, 222)),
    ('Tree', (128, 128, 0)),
    ('SignSymbol', (192, 128, 128)),
    ('Fence', (64, 64, 128)),
    ('Car', (64, 0, 128)),
    ('Pedestrian', (64, 64, 0)),
    ('Bicyclist', (0, 128, 192)),
    ('Unlabelled(void, ignore)', (0, 0, 0)),
)
CAMVID_NAMES: List[str] = [name for name, _ in _CAMVID_ROWS]
CAMVID_PALETTE: np.ndarray = np.array([rgb for _, rgb in _CAMVID_ROWS], dtype=np.uint8)
CAMVID_PALETTE.setflags(write=False)  # a shared constant: nobody may recolour it in place


def load_classes(path: Union[str, Path]) -> Tuple[List[str], np.ndarray]:
    """Parse a classes.txt of lines 'id name R G B' into (names, uint8 (N, 3) RGB palette).

    Names may contain spaces ('Unlabelled(void, ignore)'), so the id is the first token and the
    colour the last three. Ids must be 0..N-1 in order; blank lines and '#' comments are
    skipped. Raises ValueError naming the offending line.
    """
    names: List[str] = []
    colours: List[Tuple[int, int, int]] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        tokens = line.split()
        try:
            class_id = int(tokens[0])
            rgb = tuple(int(v) for v in tokens[-3:])
        except (ValueError, IndexError):
            raise ValueError(f'{path}:{lineno}: expected "id name R G B", got {line!r}') from None
        if len(tokens) < 5 or class_id != len(names) or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f'{path}:{lineno}: expected id {len(names)} with name and '
                             f'0..255 colour, got {line!r}')
        names.append(' '.join(tokens[1:-3]))
        colours.append(rgb)
    if not names:
        raise ValueError(f'{path}: no classes found')
    return names, np.array(colours, dtype=np.uint8)


def distinct_palette(num_classes: int) -> np.ndarray:
    """Return `num_classes` well-separated RGB colours, uint8 (N, 3), for models without colours.

    Hues step by the golden ratio so neighbouring ids differ strongly; brightness alternates.
    Never black, which the CamVid palette uses for void.
    """
    ids = np.arange(int(num_classes))
    hue = (ids * 0.6180339887498949) % 1.0 * 180.0  # OpenCV's 8-bit hue range is 0..179
    hsv = np.stack([hue, np.full(len(ids), 200.0), 255.0 - 80.0 * (ids % 2)], axis=1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]


def colorize(mask: np.ndarray, palette: np.ndarray = CAMVID_PALETTE) -> np.ndarray:
    """Map a (H, W) class-id mask to a (H, W, 3) uint8 RGB image through `palette`."""
    if mask.ndim != 2:
        raise ValueError(f'mask must be 2-D (H, W), got shape {mask.shape}')
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= len(palette)):
        raise ValueError(f'mask ids {int(mask.min())}..{int(mask.max())} outside the '
                         f'palette of {len(palette)} colours')
    return np.asarray(palette, dtype=np.uint8)[mask]


def overlay(rgb: np.ndarray, mask: np.ndarray, palette: np.ndarray = CAMVID_PALETTE,
            alpha: float = 0.5, void_index: int = IGNORE_INDEX) -> np.ndarray:
    """Blend class colours over `rgb` with weight `alpha`; void pixels keep the image.

    The mask must have the image's size (use imageops.resize_mask_nearest first).
    """
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f'mask {mask.shape} does not match image {rgb.shape[:2]}')
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    colours = colorize(mask, palette)
    blended = cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)
    void = mask == void_index
    if void.any():
        blended[void] = rgb[void]
    return blended


def overlay_on(mask: np.ndarray, image: Optional[np.ndarray] = None,
               palette: np.ndarray = CAMVID_PALETTE, alpha: float = 0.5) -> np.ndarray:
    """Class colours over `image` resized to the mask's size (the low-res uplink frame, say),
    or the colours alone without an image. Ids beyond `palette` get distinct colours instead of
    an error: a viewer must show any model's masks."""
    if mask.size and int(mask.max()) >= len(palette):
        palette = distinct_palette(int(mask.max()) + 1)
    if image is None:
        return colorize(mask, palette)
    if image.shape[:2] != mask.shape:
        image = cv2.resize(image, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    return overlay(image, mask, palette, alpha)


def legend_image(names: List[str], palette: np.ndarray, row_px: int = 22,
                 width_px: int = 280) -> np.ndarray:
    """An RGB (rows x width) image listing each class's colour swatch, id and name."""
    img = np.full((row_px * len(names) + 8, width_px, 3), 255, np.uint8)
    for i, (name, rgb) in enumerate(zip(names, palette)):
        top = 4 + i * row_px
        cv2.rectangle(img, (6, top + 3), (6 + row_px, top + row_px - 3),
                      tuple(int(c) for c in rgb), -1)
        cv2.rectangle(img, (6, top + 3), (6 + row_px, top + row_px - 3), (0, 0, 0), 1)
        cv2.putText(img, f'{i} {name}', (row_px + 14, top + row_px - 7),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img
