"""A sanity check of CDR bytes from a peer before rclpy's deserializer sees them.

A serialized ROS message starts with a 4-byte encapsulation header (representation id, then
options whose two low bits count padding bytes at the end of the payload). Fast-CDR subtracts
that padding from the payload's end before reading: a payload with less body than its declared
padding (the 4 bytes 00 01 00 01, say) puts the end before the start, its bounds checks wrap
around, and `deserialize_message` reads past the buffer: a segmentation fault in about half of
the processes we tried, from one message of a robot's zenoh link. Refused here first.
"""
CDR_HEADER_BYTES = 4
# Every ROS message's CDR body holds at least one 4-byte word (a header stamp, a length).
MIN_BODY_BYTES = 4


def check_cdr_envelope(payload: bytes) -> None:
    """ValueError if `payload` cannot be a CDR message: no room for the encapsulation header and
    a body, or more end padding declared than the body holds."""
    body = len(payload) - CDR_HEADER_BYTES
    if body < MIN_BODY_BYTES:
        raise ValueError(f'{len(payload)} bytes: too short for a CDR message')
    padding = payload[3] & 0x3
    if padding > body:
        raise ValueError(f'CDR header declares {padding} padding bytes, the body has {body}')
