"""Build the bundled demo clip (`data/demo/camvid_val_15fps.mp4`) from the CamVid val split.

The val split is one continuous 15 fps drive (101 frames, 480x360); it is written as H.264
(CRF 20, visually close to the source) so `make demo` works on a machine without the dataset.
"""
import argparse
import os
import sys
from typing import List, Optional

import av
import cv2

from cloudseg_ros.core.sources import list_images


def write_clip(frame_paths: List[str], out_path: str, fps: int, crf: int) -> int:
    """Encode the frames (name order) into an H.264 MP4; return the number written."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with av.open(out_path, 'w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.pix_fmt = 'yuv420p'
        stream.options = {'crf': str(crf), 'preset': 'slow'}
        count = 0
        for path in frame_paths:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                print(f'skipping unreadable {path}', file=sys.stderr)
                continue
            if count == 0:  # the codec opens on the first frame; all frames share its size
                stream.width, stream.height = bgr.shape[1], bgr.shape[0]
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                                               format='rgb24')
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


def main(argv: Optional[List[str]] = None) -> int:
    """`cloudseg make-clip [--data DIR] [--out PATH]`."""
    parser = argparse.ArgumentParser(prog='cloudseg make-clip', description=__doc__)
    parser.add_argument('--data', default='../shared/data/camvid11',
                        help='CamVid folder (camvid11 layout)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--out', default='data/demo/camvid_val_15fps.mp4')
    parser.add_argument('--fps', type=int, default=15)
    parser.add_argument('--crf', type=int, default=20)
    args = parser.parse_args(argv)
    frames = list_images(os.path.join(args.data, args.split, 'images'))
    if not frames:
        print(f'no frames under {args.data}/{args.split}/images', file=sys.stderr)
        return 1
    count = write_clip(frames, args.out, args.fps, args.crf)
    size_kb = os.path.getsize(args.out) / 1024
    print(f'wrote {args.out}: {count} frames at {args.fps} fps, {size_kb:.0f} KiB')
    return 0
