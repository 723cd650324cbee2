"""OutputStage: each output is built only when subscribed; overlay and PNG off the caller."""
import threading

import numpy as np
from std_msgs.msg import Header

from cloudseg_ros.core.mask_codec import decode_mask_png
from cloudseg_ros.ros.cloud_outputs import OutputStage


class FakePublisher:
    def __init__(self, subscribers):
        self.subscribers = subscribers
        self.sent = []

    def get_subscription_count(self):
        return self.subscribers

    def publish(self, msg):
        self.sent.append(msg)


class FakeStream:
    name = '/r1'

    def __init__(self, mask=0, color=0, png=0):
        self.mask_pub = FakePublisher(mask)
        self.color_pub = FakePublisher(color)
        self.png_pub = FakePublisher(png)


def _no_guard(_name, fn):
    return fn


MASK = np.arange(12, dtype=np.uint8).reshape(3, 4) % 5


def test_nothing_is_built_without_subscribers():
    stage = OutputStage(1, 4, _no_guard)
    colorized = []
    stream = FakeStream()
    stage.publish(stream, Header(), MASK, lambda m: colorized.append(m) or m, png=True)
    stage.shutdown()
    assert stage.jobs == 0 and not colorized
    assert not (stream.mask_pub.sent or stream.color_pub.sent or stream.png_pub.sent)


def test_only_subscribed_outputs_are_built_and_keep_the_stamp():
    stage = OutputStage(2, 4, _no_guard)
    stream = FakeStream(mask=1, png=1)  # nobody watches the overlay
    colorized = []
    header = Header()
    header.stamp.sec = 42
    stage.publish(stream, header, MASK, lambda m: colorized.append(m) or m, png=True)
    stage.shutdown()
    assert not colorized and not stream.color_pub.sent
    assert stream.mask_pub.sent[0].header.stamp.sec == 42
    png = stream.png_pub.sent[0]
    assert png.header.stamp.sec == 42
    assert np.array_equal(decode_mask_png(png.data), MASK)


def test_overlay_runs_off_the_callers_thread_with_bounded_backlog():
    stage = OutputStage(1, 2, _no_guard)
    stream = FakeStream(color=1)
    gate, threads = threading.Event(), []

    def colorize(mask):
        threads.append(threading.current_thread().name)
        gate.wait(5.0)
        return np.zeros(mask.shape + (3,), np.uint8)

    stage.publish(stream, Header(), MASK, colorize, png=False)
    stage.publish(stream, Header(), MASK, colorize, png=False)
    # Both slots are taken: a third publish would wait (back-pressure), not queue more.
    assert not stage._slots.acquire(blocking=False)
    gate.set()
    stage.shutdown()
    assert len(stream.color_pub.sent) == 2
    assert all(name.startswith('outputs') for name in threads)


def test_mask_png_declaring_a_huge_size_is_refused_before_decoding():
    import zlib
    import pytest
    from cloudseg_ros.core.mask_codec import decode_mask_png, encode_mask_png
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(decode_mask_png(encode_mask_png(mask)), mask)
    ihdr = (100_000).to_bytes(4, 'big') * 2 + bytes([8, 0, 0, 0, 0])
    forged = (b'\x89PNG\r\n\x1a\n' + len(ihdr).to_bytes(4, 'big') + b'IHDR' + ihdr
              + zlib.crc32(b'IHDR' + ihdr).to_bytes(4, 'big'))
    with pytest.raises(ValueError, match='exceeds'):
        decode_mask_png(forged)
    with pytest.raises(ValueError, match='not a PNG'):
        decode_mask_png(b'\xff\xd8 jpeg')
