"""Datasets: CamVid (camvid11 layout), Cityscapes (19 train ids) and unlabeled frames for SR.

Everything is decoded once into uint8 numpy arrays (RGB, `(N, H, W, 3)`; masks `(N, H, W)`); the
trainers then move whole splits to the accelerator and augment there in batches, so no DataLoader
workers are involved (decoding is the only CPU work and happens once, in threads).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cloudseg_ros.core.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, frame_files

CAMVID_IGNORE_INDEX = 11
CITYSCAPES_IGNORE_INDEX = 255

# Cityscapes labelIds -> trainIds (the official 19-class table of cityscapesScripts' labels.py);
# every id not listed maps to the ignore index.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_CLASSES = [
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
    'motorcycle', 'bicycle',
]


@dataclass
class SegSplit:
    """A labeled split held in memory."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    labels: np.ndarray  # (N, H, W) uint8 class ids, `ignore_index` for void
    class_names: List[str]
    ignore_index: int
    stems: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of real classes (void excluded)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as uint8 RGB `(H, W, 3)`."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str) -> np.ndarray:
    """Read a single-channel label PNG as uint8 `(H, W)`."""
    mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f'cannot read label {path}')
    if mask.ndim == 3:  # a label saved as 3 equal channels
        mask = mask[..., 0]
    return mask.astype(np.uint8)


def read_class_names(path: str, ignore_index: int = CAMVID_IGNORE_INDEX) -> List[str]:
    """Class names from a camvid11 `classes.txt` ('id name R G B' lines), void excluded."""
    names = {}
    with open(path, 'r', encoding='utf-8') as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) != ignore_index:
                names[int(parts[0])] = parts[1]
    return [names[i] for i in sorted(names)]


def list_camvid(root: str, split: str) -> List[Tuple[str, str]]:
    """(image, label) paths of a camvid11 split: `<split>/images/*.jpg` + `labels/<stem>.png`."""
    image_dir = os.path.join(root, split, 'images')
    label_dir = os.path.join(root, split, 'labels')
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f'no such split folder: {image_dir}')
    pairs = []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS:
            label = os.path.join(label_dir, stem + '.png')
            if not os.path.isfile(label):
                raise FileNotFoundError(f'image {name} has no label {label}')
            pairs.append((os.path.join(image_dir, name), label))
    if not pairs:
        raise FileNotFoundError(f'no images in {image_dir}')
    return pairs


def list_cityscapes(root: str, split: str) -> List[Tuple[str, str]]:
    """(image, labelIds) paths: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` + `gtFine/...`."""
    image_root = os.path.join(root, 'leftImg8bit', split)
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f'no such split folder: {image_root}')
    pairs = []
    for city in sorted(os.listdir(image_root)):
        city_dir = os.path.join(image_root, city)
        for name in sorted(os.listdir(city_dir)):
            if not name.endswith('_leftImg8bit.png'):
                continue
            stem = name[:-len('_leftImg8bit.png')]
            label = os.path.join(root, 'gtFine', split, city, stem + '_gtFine_labelIds.png')
            if not os.path.isfile(label):
                raise FileNotFoundError(f'image {name} has no label {label}')
            pairs.append((os.path.join(city_dir, name), label))
    if not pairs:
        raise FileNotFoundError(f'no images in {image_root}')
    return pairs


def cityscapes_lut() -> np.ndarray:
    """256-entry uint8 table labelId -> trainId (255 = ignore)."""
    lut = np.full(256, CITYSCAPES_IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def cityscapes_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelIds mask to trainIds 0..18 (everything else 255)."""
    return cityscapes_lut()[label_ids.astype(np.uint8)]


def _resize_pair(image: np.ndarray, label: np.ndarray,
                 size: Optional[Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Resize to `size` = (width, height): area for images, nearest for labels."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image, label
    return (cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA),
            cv2.resize(label, tuple(size), interpolation=cv2.INTER_NEAREST))


def load_pairs(pairs: Sequence[Tuple[str, str]],
               label_map: Optional[Callable[[np.ndarray], np.ndarray]] = None,
               size: Optional[Tuple[int, int]] = None,
               workers: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """Decode (image, label) pairs in threads into stacked uint8 arrays (same size required)."""
    def load(pair: Tuple[str, str]) -> Tuple[np.ndarray, np.ndarray]:
        label = read_mask(pair[1])
        if label_map is not None:
            label = label_map(label)
        return _resize_pair(read_rgb(pair[0]), label, size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        loaded = list(pool.map(load, pairs))
    shapes = {img.shape for img, _ in loaded}
    if len(shapes) != 1:
        raise ValueError(f'images differ in size {sorted(shapes)}; pass a resize size')
    return (np.stack([img for img, _ in loaded]), np.stack([lab for _, lab in loaded]))


def load_seg_split(root: str, split: str, dataset: str = 'camvid',
                   max_items: Optional[int] = None,
                   size: Optional[Tuple[int, int]] = None) -> SegSplit:
    """Load a whole labeled split ('camvid' or 'cityscapes') into memory."""
    if dataset == 'camvid':
        pairs = list_camvid(root, split)
        names = read_class_names(os.path.join(root, 'classes.txt'))
        ignore, label_map = CAMVID_IGNORE_INDEX, None
    elif dataset == 'cityscapes':
        pairs = list_cityscapes(root, split)
        names, ignore = list(CITYSCAPES_CLASSES), CITYSCAPES_IGNORE_INDEX
        label_map = cityscapes_to_train_ids
    else:
        raise ValueError(f"unknown dataset '{dataset}' (camvid or cityscapes)")
    if max_items:
        pairs = pairs[:max_items]
    images, labels = load_pairs(pairs, label_map, size)
    stems = [os.path.splitext(os.path.basename(p[0]))[0] for p in pairs]
    return SegSplit(images, labels, names, ignore, stems)


def read_video_frames(path: str, max_frames: Optional[int] = None,
                      stride: int = 1) -> List[np.ndarray]:
    """Decode every `stride`-th frame of a video as RGB (PyAV when installed, else OpenCV)."""
    frames: List[np.ndarray] = []
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % stride == 0:
                    frames.append(frame.to_ndarray(format='rgb24'))
                if max_frames and len(frames) >= max_frames:
                    break
        return frames
    capture = cv2.VideoCapture(path)
    index = 0
    while not (max_frames and len(frames) >= max_frames):
        ok, bgr = capture.read()
        if not ok:
            break
        if index % stride == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return frames


def load_frames(source: str, max_frames: Optional[int] = None,
                stride: int = 1) -> List[np.ndarray]:
    """Unlabeled RGB frames for SR from an image folder or a video file."""
    if os.path.isfile(source):
        if os.path.splitext(source)[1].lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f'{source}: not a video file ({", ".join(VIDEO_EXTENSIONS)})')
        return read_video_frames(source, max_frames, stride)
    paths = frame_files(source)[::max(1, stride)]
    if max_frames:
        paths = paths[:max_frames]
    if not paths:
        raise FileNotFoundError(f'no images in {source}')
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(read_rgb, paths))


def group_by_size(frames: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Stack frames into one `(N, H, W, 3)` array per distinct size (largest group first)."""
    groups: dict = {}
    for frame in frames:
        groups.setdefault(frame.shape, []).append(frame)
    return [np.stack(g) for g in sorted(groups.values(), key=len, reverse=True)]


def read_sequences(root: str) -> dict:
    """stem -> sequence name from a camvid11 `frames.csv` (empty when the file is missing)."""
    path = os.path.join(root, 'frames.csv')
    if not os.path.isfile(path):
        return {}
    out = {}
    with open(path, 'r', encoding='utf-8') as f:
        header = f.readline().strip().split(',')
        stem_col, seq_col = header.index('stem'), header.index('sequence')
        for line in f:
            parts = line.strip().split(',')
            if len(parts) > max(stem_col, seq_col):
                out[parts[stem_col]] = parts[seq_col]
    return out


def split_by_sequence(split: SegSplit, root: str, sequences: Sequence[str]
                      ) -> Tuple[SegSplit, SegSplit]:
    """(frames not in `sequences`, frames in them), by the dataset's `frames.csv`.

    Used to hold a whole drive out of training: frames of one drive are near-duplicates, so
    only a drive never seen measures how the net generalises to new streets.
    """
    wanted = {s.strip() for s in sequences if s.strip()}
    seq_of = read_sequences(root)
    unknown = wanted - set(seq_of.values())
    if unknown:
        raise ValueError(f'sequences {sorted(unknown)} not in {root}/frames.csv '
                         f'(known: {sorted(set(seq_of.values()))})')
    inside = np.array([seq_of.get(stem) in wanted for stem in split.stems], bool)

    def pick(mask: np.ndarray) -> SegSplit:
        idx = np.flatnonzero(mask)
        return SegSplit(split.images[idx], split.labels[idx], split.class_names,
                        split.ignore_index, [split.stems[i] for i in idx])

    return pick(~inside), pick(inside)
