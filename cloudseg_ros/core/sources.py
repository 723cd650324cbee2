"""Frame sources for the replay camera: a video file, an image folder, a dataset split, a bag.

A dataset split is a folder with an `images/` sub-folder (CamVid layout, `<split>/images`) or a
Cityscapes `leftImg8bit/<split>` tree; frames are read in name order, which is time order for
both datasets. Unreadable frames are reported and skipped, never silently dropped. rosbag2 MCAP
recordings are read by `core/bag_source.py`; `open_source` picks the reader for a path.
"""
import os
from typing import Iterator, List, Optional

import cv2
import numpy as np

# The one list of readable frame files and videos: the replay camera, bench-stream and the
# training tools (adapt, train-sr) must agree on which frames a folder holds.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.ppm', '.tif', '.tiff')
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.avi', '.mov', '.webm', '.h264', '.m4v', '.ts')


class SourceError(RuntimeError):
    """The source cannot be opened or holds no frames."""


def list_images(folder: str) -> List[str]:
    """Image files under `folder` (recursively), sorted by path.

    Folders named `labels` are passed over: in a dataset tree (CamVid's `<split>/labels`) they
    hold class-id PNGs, which must never be streamed or trained on as camera frames.
    """
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != 'labels']
        paths += [os.path.join(root, f) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(paths)


def _image_folder_of(path: str) -> str:
    """Return the frame folder: `images/` of a CamVid split, else the folder itself."""
    images = os.path.join(path, 'images')
    return images if os.path.isdir(images) else path


def frame_files(path: str) -> List[str]:
    """The frames of an image folder in stream order.

    A CamVid split's `images/` sub-folder when there is one, else every image under `path`
    (recursively), sorted by path. Every tool that numbers a folder's frames (the replay
    camera, bench-stream's --skip-frames, adapt's held-out split) lists them here.
    """
    return list_images(_image_folder_of(path))


class FrameSource:
    """Reads RGB frames one at a time from a video file or an image folder, optionally looping."""

    def __init__(self, path: str, loop: bool = True) -> None:
        if not os.path.exists(path):
            raise SourceError(f"source '{path}' does not exist")
        self.path = path
        self.loop = loop
        self.skipped = 0  # unreadable frames so far
        self._files: Optional[List[str]] = None
        self._capture = None
        self._index = 0
        if os.path.isdir(path):
            self._files = frame_files(path)
            if not self._files:
                raise SourceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under '{path}'")
        else:
            self._open_video()

    def _open_video(self) -> None:
        self._capture = cv2.VideoCapture(self.path)
        if not self._capture.isOpened():
            raise SourceError(f"cannot open video '{self.path}'")

    @property
    def native_fps(self) -> Optional[float]:
        """Frame rate stored in a video file, None for image folders or when unknown."""
        if self._capture is None:
            return None
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and fps > 0 else None

    def __len__(self) -> int:
        if self._files is not None:
            return len(self._files)
        return max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def read(self) -> Optional[np.ndarray]:
        """Next frame as uint8 (H, W, 3) RGB, or None at the end (when not looping)."""
        for _ in range(max(len(self), 1) + 1):
            frame, at_end = self._read_bgr()
            if at_end:
                if not self.loop:
                    return None
                self.rewind()
                continue
            if frame is None:
                self.skipped += 1
                continue
            return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        raise SourceError(f"no readable frame in '{self.path}'")

    def _read_bgr(self):
        """(frame or None if unreadable, at_end)."""
        if self._files is not None:
            if self._index >= len(self._files):
                return None, True
            frame = cv2.imread(self._files[self._index], cv2.IMREAD_COLOR)
            self._index += 1
            return frame, False
        ok, frame = self._capture.read()
        return (frame, False) if ok else (None, True)

    def rewind(self) -> None:
        """Start again from the first frame."""
        self._index = 0
        if self._capture is not None:
            self._capture.release()
            self._open_video()

    def frames(self) -> Iterator[np.ndarray]:
        """Iterate over the frames, forever when looping."""
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        """Release the video file."""
        if self._capture is not None:
            self._capture.release()


def open_source(path: str, loop: bool = True, topic: str = ''):
    """FrameSource for a video or image folder, BagSource for an MCAP file or bag folder.

    `topic` chooses the image topic of a bag (default: its only one); other sources have none.
    """
    from cloudseg_ros.core.bag_source import BagSource, is_bag
    if is_bag(path):
        return BagSource(path, loop=loop, topic=topic)
    if topic:
        raise SourceError(f"'{path}' is not a bag: a topic ('{topic}') applies to bags only")
    return FrameSource(path, loop=loop)
