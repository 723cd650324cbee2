"""Peer strings made log-safe; peer stamps checked against our clock."""
import math

from cloudseg_ros.core.peer_input import MAX_LOGGED_CHARS, printable, stamp_plausible


def test_printable_escapes_line_breaks_and_terminal_escapes():
    text = printable('h264\n[ERROR] [cloud]: forged\r\x1b[2J\u2028tab\there\\')
    assert text == 'h264\\n[ERROR] [cloud]: forged\\r\\x1b[2J\\u2028tab\\there\\\\'
    assert text.isprintable() and text.isascii()


def test_printable_truncates_and_says_how_much():
    text = printable('a' * 1_000_000)
    assert text.startswith('a' * MAX_LOGGED_CHARS)
    assert text.endswith(f'...(+{1_000_000 - MAX_LOGGED_CHARS} chars)')
    assert len(printable('\x00' * 10_000, 10)) < 100


def test_printable_keeps_ordinary_text_and_takes_any_object():
    assert printable('jpeg') == 'jpeg'
    assert printable(42) == '42'


def test_stamp_plausible_bounds_ahead_and_behind():
    now = 1_700_000_000.0
    assert stamp_plausible(now + 4.0, now, 5.0, 65.0)
    assert stamp_plausible(now - 60.0, now, 5.0, 65.0)  # late report: queued on the link
    assert not stamp_plausible(now + 20_000.0, now, 5.0, 65.0)
    assert not stamp_plausible(now - 1000.0, now, 5.0, 65.0)
    assert not stamp_plausible(math.nan, now, 5.0, 65.0)
    assert not stamp_plausible(math.inf, now, 5.0, 65.0)
