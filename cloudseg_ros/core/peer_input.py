"""Values that come from peers, made safe to log and checked against our own clock.

Anything a robot, a cloud or a stranger on the DDS domain puts in a message is untrusted. A
string logged as it came can forge log lines (a newline, then a fake `[ERROR]` line), move the
terminal cursor (escape sequences) or fill the log (megabytes in one field): `printable()` is
the one way a peer's string reaches a log or an error message. A stamp from another host is
only plausible near this host's clock (`stamp_plausible()`); one far off (a broken clock, a
forged message) must not reach arithmetic that assumes seconds-scale differences.
"""
import math

MAX_LOGGED_CHARS = 64  # a codec name, namespace or encoding is a few characters


def printable(value: object, max_chars: int = MAX_LOGGED_CHARS) -> str:
    """Return `value` as one log-safe line: escaped, and cut to `max_chars` input characters.

    Control characters, backslashes and anything outside printable ASCII are written as Python
    escapes (a newline becomes the two characters backslash and n), so the result is a single
    line of printable ASCII at most about 10 x `max_chars` long.
    """
    text = value if isinstance(value, str) else str(value)
    head = text[:max_chars]
    escaped = ''.join(c if ' ' <= c <= '~' and c != '\\' else c.encode('unicode_escape')
                      .decode('ascii') for c in head)
    if len(text) > max_chars:
        escaped += f'...(+{len(text) - max_chars} chars)'
    return escaped


def stamp_plausible(stamp_s: float, now_s: float, max_ahead_s: float,
                    max_behind_s: float) -> bool:
    """Whether a peer's stamp lies in [now - max_behind_s, now + max_ahead_s] of our clock.

    Ahead of our clock only a clock offset can explain; behind it, also the time the message
    took to get here (queued on a congested link), so `max_behind_s` is usually the larger.
    """
    return math.isfinite(stamp_s) and -max_behind_s <= stamp_s - now_s <= max_ahead_s
