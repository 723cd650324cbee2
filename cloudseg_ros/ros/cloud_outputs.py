"""The cloud's outputs per robot: published lazily and off the inference thread.

As image_transport does, an output is built only when someone subscribes to it
(`get_subscription_count()`): at 2048x1024 the rgb8 overlay took 26-50 ms and the PNG 12-18
ms of CPU per frame, more than the GPU's whole batch. Building and publishing (the mono8 mask,
a 2 MB copy at 2048x1024, too) run on `threads` output threads, in order per robot
(`core/serial_lanes.py`), so the inference thread starts the engine's next batch while this
one is published; OpenCV releases the interpreter while it resizes, blends and compresses. At
most `max_pending` frames wait for those threads: past that, the inference thread waits for a
free slot (back-pressure) rather than dropping outputs or holding unbounded memory.
"""
import threading
from typing import Callable, Optional

import numpy as np
from std_msgs.msg import Header

from cloudseg_ros.core.mask_codec import PNG_MONO8_FORMAT, encode_mask_png
from cloudseg_ros.core.serial_lanes import SerialLanes
from cloudseg_ros.ros.conversions import compressed_msg, mask_to_image_msg, rgb_to_image_msg

Colorize = Callable[[np.ndarray], np.ndarray]  # mask -> rgb8 overlay of the same size


def subscribed(publisher) -> bool:
    """Whether any subscription is matched to `publisher` now."""
    return publisher.get_subscription_count() > 0


class OutputStage:
    """Publishes mask, mask_color and mask/compressed of one robot's frame, lazily."""

    def __init__(self, threads: int, max_pending: int,
                 guard: Callable[[str, Callable], Callable]) -> None:
        """`guard(name, fn)` wraps a job so that an exception is logged and counted."""
        self._lanes = SerialLanes(threads, max_pending, 'outputs')
        self._slots = threading.BoundedSemaphore(max_pending)
        self._guard = guard
        self.jobs = 0  # output jobs run so far (for tests and statistics)

    def publish(self, stream, header: Header, mask: np.ndarray,
                colorize: Optional[Colorize], png: bool) -> None:
        """Queue the mask, the overlay (when `colorize`) and the PNG (when `png`) of a frame.

        Each output is built only if it has a subscriber; `header` keeps the acquisition stamp.
        """
        want_mask = subscribed(stream.mask_pub)
        colorize = colorize if colorize is not None and subscribed(stream.color_pub) else None
        png = png and subscribed(stream.png_pub)
        if not (want_mask or colorize or png):
            return
        self._slots.acquire()  # back-pressure: bounded work and memory in flight
        job = self._guard(f'{stream.name}: outputs',
                          lambda: self._build(stream, header, mask, want_mask, colorize, png))
        # Never refused: the slots keep the total below any lane's bound.
        self._lanes.submit(stream.name, lambda: self._release_after(job))

    def _release_after(self, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            self._slots.release()

    def _build(self, stream, header: Header, mask: np.ndarray, want_mask: bool,
               colorize: Optional[Colorize], png: bool) -> None:
        self.jobs += 1
        if want_mask:
            stream.mask_pub.publish(mask_to_image_msg(mask, header))
        if png:
            stream.png_pub.publish(compressed_msg(header, PNG_MONO8_FORMAT,
                                                  encode_mask_png(mask)))
        if colorize is not None:
            stream.color_pub.publish(rgb_to_image_msg(colorize(mask), header))

    def shutdown(self) -> None:
        """Publish what is queued, then stop the threads."""
        self._lanes.shutdown(drop_pending=False)
