"""The cloud's outputs per robot: published lazily, the costly ones off the inference thread.

As image_transport does, an output is built only when someone subscribes to it
(`get_subscription_count()`): at 2048x1024 the rgb8 overlay took 26-50 ms and the PNG 12-18
ms of CPU per frame, more than the GPU's whole batch. The mono8 mask goes out at once from the
inference thread (a copy); the overlay and the PNG are made and published on `threads` worker
threads (OpenCV releases the interpreter while it resizes, blends and compresses). At most
`max_pending` frames wait for those workers: past that, the inference thread waits for a free
slot (back-pressure) rather than dropping outputs or holding unbounded memory.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np
from std_msgs.msg import Header

from cloudseg_ros.core.mask_codec import PNG_MONO8_FORMAT, encode_mask_png
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
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix='outputs')
        self._slots = threading.BoundedSemaphore(max_pending)
        self._guard = guard
        self.jobs = 0  # overlay / PNG jobs run so far (for tests and statistics)

    def publish(self, stream, header: Header, mask: np.ndarray,
                colorize: Optional[Colorize], png: bool) -> None:
        """Publish the mask now; queue the overlay (when `colorize`) and PNG (when `png`).

        Each output is built only if it has a subscriber; `header` keeps the acquisition stamp.
        """
        if subscribed(stream.mask_pub):
            stream.mask_pub.publish(mask_to_image_msg(mask, header))
        color = colorize is not None and subscribed(stream.color_pub)
        png = png and subscribed(stream.png_pub)
        if not (color or png):
            return
        self._slots.acquire()  # back-pressure: bounded work and memory in flight
        job = self._guard(f'{stream.name}: outputs',
                          lambda: self._build(stream, header, mask, colorize if color else None,
                                              png))
        self._pool.submit(self._release_after, job)

    def _release_after(self, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            self._slots.release()

    def _build(self, stream, header: Header, mask: np.ndarray, colorize: Optional[Colorize],
               png: bool) -> None:
        self.jobs += 1
        if png:
            stream.png_pub.publish(compressed_msg(header, PNG_MONO8_FORMAT,
                                                  encode_mask_png(mask)))
        if colorize is not None:
            stream.color_pub.publish(rgb_to_image_msg(colorize(mask), header))

    def shutdown(self) -> None:
        """Finish the queued jobs and stop the workers."""
        self._pool.shutdown(wait=True)
