"""Frames the robot sent against frames the cloud saw arrive, matched by sequence number.

The bandwidth estimator learns only from frames that arrive. When a link drops or holds
everything (a rate collapse with frames larger than the queue: every frame loses a fragment),
nothing arrives and the estimator has no news for seconds. The robot knows what it sent, so
"sent more than `timeout_s` ago and not reported by the cloud" is a congestion signal that needs
no arrivals at all.

Start-up is not a loss: frames sent before the first arrival report (DDS still discovering the
cloud, the cloud still loading, or its reports not yet flowing back) say nothing about the
link, so only frames from the first reported sequence number on are judged. The first report
is the evidence that both directions work; from then on a missing report is a missing frame.
"""
from collections import OrderedDict
from typing import Optional

MAX_TRACKED = 2000  # frames remembered (about 2 minutes at 15 fps)


class DeliveryTracker:
    """Matches sent frames with arrival reports; reports the delivered rate when most are late."""

    def __init__(self, timeout_s: float = 0.5, window_s: float = 1.0,
                 late_fraction: float = 0.5) -> None:
        """`timeout_s`: a frame later than this counts as undelivered; `window_s`: span judged."""
        if not (timeout_s > 0 and window_s > 0 and 0 < late_fraction <= 1):
            raise ValueError('timeout_s and window_s must be > 0, late_fraction in (0, 1]')
        self.timeout_s = timeout_s
        self.window_s = window_s
        self.late_fraction = late_fraction
        self.reset()

    def reset(self) -> None:
        """Forget every frame (the sender restarted: its sequence numbers start again)."""
        self._sent: 'OrderedDict[int, tuple]' = OrderedDict()  # seq -> (sent_s, bytes, arrived)
        self._first_reported: Optional[int] = None  # frames before it are not judged

    def on_sent(self, seq: int, sent_s: float, size_bytes: int) -> None:
        """Record a frame the robot sent (robot clock)."""
        self._sent[seq] = (sent_s, size_bytes, self._sent.get(seq, (0, 0, False))[2])
        while len(self._sent) > MAX_TRACKED:
            self._sent.popitem(last=False)

    def on_arrived(self, seq: int) -> None:
        """Record that the cloud reported the frame (arrival reports may precede send reports)."""
        if self._first_reported is None:
            self._first_reported = seq
        sent_s, size, _ = self._sent.get(seq, (float('nan'), 0, True))
        self._sent[seq] = (sent_s, size, True)
        # Reports of frames never announced as sent (lost edge_stats, a forged flood) would
        # otherwise only be dropped by later on_sent calls: bound the table here too.
        while len(self._sent) > MAX_TRACKED:
            self._sent.popitem(last=False)

    def congested_rate_kbps(self, now_s: float) -> Optional[float]:
        """Delivered kbps over the judged window if most of its frames are late, else None.

        The window is [now - timeout - window, now - timeout]: frames young enough to still be in
        flight are not judged, nor frames sent before the first arrival report (start-up).
        """
        if self._first_reported is None:
            return None
        end_s = now_s - self.timeout_s
        start_s = end_s - self.window_s
        judged = [(size, arrived) for seq, (sent_s, size, arrived) in self._sent.items()
                  if start_s <= sent_s < end_s and seq >= self._first_reported]
        if not judged:
            return None
        late = sum(1 for _, arrived in judged if not arrived)
        if late < self.late_fraction * len(judged):
            return None
        delivered = sum(size for size, arrived in judged if arrived)
        return delivered * 8e-3 / self.window_s
