"""CDR bytes from a peer are checked before rclpy deserializes them (core/cdr_envelope.py)."""
import pytest
from rclpy.serialization import serialize_message

from cloudseg_ros.core.cdr_envelope import check_cdr_envelope
from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.ros.zenoh_uplink import decode_payload


@pytest.mark.parametrize('payload', [
    b'', b'\x00\x01', b'\x00\x01\x00\x00',
    b'\x00\x01\x00\x01',  # padding declared, no body: the one that crashed the fuzz test
    b'\x00\x01\x00\x03\x00\x00',  # 3 padding bytes declared, 2 of body
    b'\x00\x01\x00\x00\x00\x00\x00'])
def test_envelopes_that_cannot_hold_a_message_are_refused(payload):
    with pytest.raises(ValueError):
        check_cdr_envelope(payload)
    with pytest.raises(ValueError, match='undecodable EncodedFrame on robot1'):
        decode_payload(payload, EncodedFrame, 'robot1')


def test_a_real_message_passes_and_decodes():
    msg = EncodedFrame(codec='jpeg', width=4, height=2, scale=2)
    payload = serialize_message(msg)
    check_cdr_envelope(payload)
    decoded = decode_payload(payload, EncodedFrame, 'robot1')
    assert (decoded.codec, decoded.width, decoded.height) == ('jpeg', 4, 2)
