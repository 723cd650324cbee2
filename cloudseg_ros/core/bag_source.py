"""Frames from a rosbag2 recording in MCAP storage (a `.mcap` file or a bag folder).

Reads one `sensor_msgs/Image` or `sensor_msgs/CompressedImage` topic through the `mcap` reader
and decodes CDR with `mcap_ros2` (pure Python: no rclpy, no ROS install), in log-time order, one
message at a time, so memory stays at one chunk whatever the bag's size. Each frame keeps its
recorded header stamp and frame_id and its log time (when the recorder received it), which is
what a player paces on.
"""
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from cloudseg_ros.core.encodings import (SUPPORTED_ENCODINGS, bytes_per_pixel, decode_compressed,
                                         rows_to_rgb)
from cloudseg_ros.core.imageops import ImageError
from cloudseg_ros.core.sources import SourceError

RAW_SCHEMAS = ('sensor_msgs/msg/Image', 'sensor_msgs/Image')
COMPRESSED_SCHEMAS = ('sensor_msgs/msg/CompressedImage', 'sensor_msgs/CompressedImage')

# Largest compressed frame decoded from a bag (read from its header before decoding).
MAX_BAG_PIXELS = 8192 * 8192


@dataclass
class BagFrame:
    """One decoded image of the bag with its recorded times."""

    rgb: np.ndarray      # uint8 (H, W, 3)
    log_time_ns: int     # when the recorder received the message
    stamp_ns: int        # header.stamp: the acquisition time
    frame_id: str


def is_bag(path: str) -> bool:
    """Whether `path` is an MCAP file or a rosbag2 folder (metadata.yaml or .mcap files)."""
    if os.path.isfile(path):
        return path.lower().endswith('.mcap')
    if not os.path.isdir(path):
        return False
    return (os.path.exists(os.path.join(path, 'metadata.yaml'))
            or any(f.lower().endswith('.mcap') for f in os.listdir(path)))


def bag_files(path: str) -> List[str]:
    """The MCAP files of a bag, in playing order (a folder's metadata.yaml gives the order)."""
    if os.path.isfile(path):
        return [path]
    metadata = os.path.join(path, 'metadata.yaml')
    if not os.path.exists(metadata):
        return sorted(os.path.join(path, f) for f in os.listdir(path)
                      if f.lower().endswith('.mcap'))
    import yaml
    with open(metadata) as f:
        info = (yaml.safe_load(f) or {}).get('rosbag2_bagfile_information', {})
    storage = info.get('storage_identifier', 'mcap')
    if storage != 'mcap':
        raise SourceError(f"bag '{path}' uses '{storage}' storage; only MCAP is read "
                          f"(convert it: ros2 bag convert, storage 'mcap')")
    files = [os.path.join(path, f) for f in info.get('relative_file_paths', [])]
    missing = [f for f in files if not os.path.exists(f)]
    if missing or not files:
        raise SourceError(f"bag '{path}': metadata.yaml lists missing files {missing or '[]'}")
    return files


def _summary(path: str):
    """The summary section of one MCAP file; SourceError when the file is truncated or damaged."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    try:
        with open(path, 'rb') as f:
            summary = make_reader(f).get_summary()
    except (McapError, OSError, ValueError, EOFError, StopIteration, struct.error) as err:
        raise SourceError(
            f"'{path}' is truncated or not an MCAP file ({type(err).__name__}: {err}); a bag "
            f"cut short by a crash can be repaired with 'mcap recover' or 'ros2 bag reindex'"
        ) from err
    if summary is None:
        raise SourceError(f"'{path}' has no summary section (written without one, or cut "
                          f"short); repair it with 'mcap recover'")
    return summary


def list_topics(files: List[str]) -> Dict[str, Tuple[str, int]]:
    """{topic: (schema name, message count)} over all files of a bag."""
    topics: Dict[str, Tuple[str, int]] = {}
    for path in files:
        summary = _summary(path)
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        for channel_id, channel in summary.channels.items():
            schema = summary.schemas.get(channel.schema_id)
            name = schema.name if schema is not None else '(no schema)'
            previous = topics.get(channel.topic, (name, 0))[1]
            topics[channel.topic] = (name, previous + counts.get(channel_id, 0))
    return topics


def pick_image_topic(topics: Dict[str, Tuple[str, int]], wanted: str, path: str) -> str:
    """The image topic to play: `wanted`, or the only Image/CompressedImage topic of the bag."""
    images = [t for t, (schema, _) in sorted(topics.items())
              if schema in RAW_SCHEMAS + COMPRESSED_SCHEMAS]
    listing = ', '.join(f'{t} ({schema}, {n} msgs)' for t, (schema, n) in sorted(topics.items()))
    if wanted:
        if wanted not in topics:
            raise SourceError(f"bag '{path}' has no topic '{wanted}'; topics: {listing}")
        if wanted not in images:
            raise SourceError(f"topic '{wanted}' of '{path}' is {topics[wanted][0]}, not an "
                              f"Image or CompressedImage")
        return wanted
    if not images:
        raise SourceError(f"bag '{path}' has no sensor_msgs/Image or CompressedImage topic; "
                          f"topics: {listing or 'none'}")
    if len(images) > 1:
        raise SourceError(f"bag '{path}' has {len(images)} image topics, choose one with the "
                          f"'topic' parameter (--topic): {', '.join(images)}")
    return images[0]


def raw_image_to_rgb(encoding: str, width: int, height: int, step: int, data: bytes,
                     big_endian: bool = False) -> np.ndarray:
    """RGB (H, W, 3) of the fields of a sensor_msgs/Image (the edge's `core.encodings`
    conversions: rgb8, bgr8, mono16, YUV 4:2:2, Bayer, ...); ValueError when unusable."""
    try:
        bytes_per_pixel(encoding)
    except ImageError:
        raise ValueError(f"unsupported image encoding '{encoding[:40]}' "
                         f"(supported: {', '.join(SUPPORTED_ENCODINGS)})") from None
    if (width == 0 or height == 0 or step < width * bytes_per_pixel(encoding)
            or len(data) < step * height):
        raise ValueError(f'{encoding} image {width}x{height}, step {step}: {len(data)} data '
                         f'bytes do not hold it')
    rows = np.frombuffer(bytes(data), np.uint8, count=step * height).reshape(height, step)
    return rows_to_rgb(rows, width, encoding, big_endian)


def compressed_image_to_rgb(data: bytes) -> Optional[np.ndarray]:
    """RGB of a JPEG or PNG CompressedImage payload, None when it does not decode or its header
    declares more than MAX_BAG_PIXELS."""
    try:
        return decode_compressed(bytes(data), MAX_BAG_PIXELS)
    except ValueError:
        return None


class BagSource:
    """Plays the frames of one image topic of a bag, optionally looping (FrameSource interface).

    `read()` gives the RGB frame alone, `read_frame()` the BagFrame with its recorded times.
    An unknown raw encoding or a damaged file raises SourceError; a compressed payload that
    does not decode is counted in `skipped` and passed over.
    """

    def __init__(self, path: str, loop: bool = True, topic: str = '') -> None:
        if not os.path.exists(path):
            raise SourceError(f"source '{path}' does not exist")
        self.path = path
        self.loop = loop
        self.skipped = 0
        self.files = bag_files(path)
        if not self.files:
            raise SourceError(f"no .mcap files in '{path}'")
        topics = list_topics(self.files)
        self.topic = pick_image_topic(topics, topic, path)
        self.schema, self.count = topics[self.topic]
        self.compressed = self.schema in COMPRESSED_SCHEMAS
        self._fps: Optional[float] = None
        self._messages: Optional[Iterator] = None
        self.rewind()
        # Decode the first frame now: an unusable encoding is an error at open, not per frame.
        loop, self.loop = self.loop, False
        first = self.read_frame()
        self.loop = loop
        if first is None:
            raise SourceError(f"no decodable frame on '{self.topic}' of '{path}'")
        self.rewind()
        self.skipped = 0

    @property
    def native_fps(self) -> Optional[float]:
        """Average recorded rate of the topic (log times), None for fewer than two frames.

        The first call reads the topic's log times through the file without decoding CDR.
        """
        if self._fps is None and self.count >= 2:
            from mcap.reader import make_reader
            first = last = None
            for path in self.files:
                with open(path, 'rb') as f:
                    for _, _, message in make_reader(f).iter_messages(topics=[self.topic]):
                        first = message.log_time if first is None else first
                        last = message.log_time
            if first is not None and last > first:
                self._fps = (self.count - 1) / ((last - first) * 1e-9)
        return self._fps

    def __len__(self) -> int:
        return self.count

    def _iter_messages(self) -> Iterator:
        """(log_time_ns, decoded message) of the topic, file after file."""
        from mcap.reader import make_reader
        from mcap_ros2.decoder import DecoderFactory
        for path in self.files:
            with open(path, 'rb') as f:
                reader = make_reader(f, decoder_factories=[DecoderFactory()])
                for _, _, message, ros_msg in reader.iter_decoded_messages(topics=[self.topic]):
                    yield message.log_time, ros_msg

    def _next_message(self):
        """Next (log time, message); None at the end; SourceError when the file breaks off."""
        from mcap.exceptions import McapError
        try:
            return next(self._messages, None)
        except (McapError, EOFError, ValueError, KeyError, IndexError, struct.error) as err:
            raise SourceError(f"'{self.path}' breaks off inside topic '{self.topic}' "
                              f"({type(err).__name__}: {err}): truncated or damaged") from err

    def _decode(self, log_time_ns: int, msg) -> Optional[BagFrame]:
        """BagFrame of a decoded message; None if its compressed payload does not decode."""
        if self.compressed:
            rgb = compressed_image_to_rgb(msg.data)
            if rgb is None:
                return None
        else:
            try:
                rgb = raw_image_to_rgb(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                                       bool(msg.is_bigendian))
            except ValueError as err:
                raise SourceError(f"topic '{self.topic}' of '{self.path}': {err}") from err
        stamp = msg.header.stamp
        return BagFrame(rgb, log_time_ns, stamp.sec * 1_000_000_000 + stamp.nanosec,
                        msg.header.frame_id)

    def read_frame(self) -> Optional[BagFrame]:
        """Next frame with its recorded times, or None at the end (when not looping)."""
        rewound = False
        while True:
            item = self._next_message()
            if item is None:
                if rewound:  # a whole pass without one decodable frame
                    raise SourceError(f"no decodable frame on '{self.topic}' of '{self.path}'")
                if not self.loop:
                    return None
                self.rewind()
                rewound = True
                continue
            frame = self._decode(*item)
            if frame is not None:
                return frame
            self.skipped += 1

    def read(self) -> Optional[np.ndarray]:
        """Next RGB frame, or None at the end (when not looping)."""
        frame = self.read_frame()
        return None if frame is None else frame.rgb

    def frames(self) -> Iterator[np.ndarray]:
        """Iterate over the RGB frames, forever when looping."""
        while True:
            rgb = self.read()
            if rgb is None:
                return
            yield rgb

    def rewind(self) -> None:
        """Start again from the first frame."""
        self.close()
        self._messages = self._iter_messages()

    def close(self) -> None:
        """Close the file being read."""
        if self._messages is not None:
            self._messages.close()
            self._messages = None
