"""Write serialized ROS 2 messages to an MCAP file as rosbag2 does (no rclpy needed here).

Profile 'ros2', one schema per message type holding its concatenated .msg definitions
('ros2msg', tools/msg_definitions.py), one channel per topic, CDR payloads written as they came
off the wire. The `mcap` writer streams: only the chunk being filled (about `chunk_bytes`) is
held in memory, so a long recording costs no more memory than a short one.
"""
from dataclasses import dataclass
from typing import Dict, Optional

from cloudseg_ros.tools.msg_definitions import definition

CHUNK_BYTES = 1 << 20


@dataclass
class TopicTally:
    """What one topic has written so far."""

    msg_type: str
    messages: int = 0
    bytes: int = 0


class BagWriter:
    """An MCAP file being written; `write()` each serialized message, then `close()`."""

    def __init__(self, path: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        from mcap.writer import CompressionType, Writer
        try:
            import zstandard  # noqa: F401 (the compression rosbag2 and Foxglove read)
            compression = CompressionType.ZSTD
        except ImportError:
            compression = CompressionType.NONE
        self.path = path
        self._file = open(path, 'wb')
        self._writer = Writer(self._file, chunk_size=chunk_bytes, compression=compression)
        self._writer.start(profile='ros2', library='cloudseg_ros record')
        self._schemas: Dict[str, int] = {}
        self._channels: Dict[str, int] = {}
        self.topics: Dict[str, TopicTally] = {}
        self._closed = False

    def add_topic(self, topic: str, msg_type: str) -> None:
        """Register `topic` of `msg_type` ('pkg/msg/Type'); its schema is written once per type.

        No `offered_qos_profiles` metadata: its YAML differs between ROS distributions, and
        without it `ros2 bag play` publishes with its defaults.
        """
        if topic in self._channels:
            return
        if msg_type not in self._schemas:
            self._schemas[msg_type] = self._writer.register_schema(
                msg_type, 'ros2msg', definition(msg_type).encode())
        self._channels[topic] = self._writer.register_channel(
            topic, 'cdr', self._schemas[msg_type])
        self.topics[topic] = TopicTally(msg_type)

    def write(self, topic: str, data: bytes, log_time_ns: int,
              publish_time_ns: Optional[int] = None) -> None:
        """Append one CDR message of a registered topic."""
        tally = self.topics[topic]
        self._writer.add_message(channel_id=self._channels[topic], log_time=log_time_ns,
                                 publish_time=publish_time_ns or log_time_ns,
                                 sequence=tally.messages, data=data)
        tally.messages += 1
        tally.bytes += len(data)

    @property
    def messages(self) -> int:
        """Messages written so far, all topics."""
        return sum(t.messages for t in self.topics.values())

    @property
    def bytes(self) -> int:
        """Payload bytes written so far, all topics."""
        return sum(t.bytes for t in self.topics.values())

    def close(self) -> None:
        """Write the summary section (indexes, statistics) and close the file."""
        if not self._closed:
            self._closed = True
            self._writer.finish()
            self._file.close()
