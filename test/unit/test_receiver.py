"""The cloud's receiving end: sequence numbers modulo 2^64, sessions, resource bounds, probes."""
import sys
import threading

import numpy as np
import pytest

from cloudseg_ros.core.codecs import CodecError, FrameEncoder, H264Decoder, H264Encoder
from cloudseg_ros.core.receiver import (MAX_SEQ_GAP, SEQ_MODULUS, FrameMeta, ReceiveError,
                                        ReceiveLimits, StreamReceiver, check_meta,
                                        check_probe_twin, seq_delta)

U64_MAX = SEQ_MODULUS - 1


def _rgb(width, height, seed=0):
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 3 + seed) % 256, (yy * 5) % 256, (xx + yy + 7 * seed) % 256], axis=2)
    return img.astype(np.uint8)


def _meta(seq=1, codec='jpeg', size=(120, 90), scale=4, keyframe=True, session_id=7,
          orig=None, kind=2):
    width, height = size
    orig_w, orig_h = orig or (width * scale, height * scale)
    return FrameMeta(seq=seq, kind=kind, codec=codec, width=width, height=height,
                     orig_width=orig_w, orig_height=orig_h, scale=scale, keyframe=keyframe,
                     stamp_s=0.0, session_id=session_id)


def _jpeg(size=(120, 90), seed=0):
    return FrameEncoder('jpeg').encode(_rgb(*size, seed)).data


def test_seq_delta_wraps_modulo_2_64():
    assert seq_delta(0, U64_MAX) == 1
    assert seq_delta(U64_MAX, 0) == -1
    assert seq_delta(5, 3) == 2
    assert seq_delta(3, 5) == -2


def test_seq_2_64_minus_1_is_received_and_wraps_without_loss():
    receiver = StreamReceiver()
    data = _jpeg()
    for seq in (U64_MAX - 1, U64_MAX, 0, 1):
        assert receiver.receive(_meta(seq=seq), data).rgb.shape == (90, 120, 3)
    assert receiver.lost == 0 and receiver.rejected == 0


def test_forged_seq_counts_no_absurd_loss_and_stream_continues():
    receiver = StreamReceiver()
    data = _jpeg()
    receiver.receive(_meta(seq=5), data)
    receiver.receive(_meta(seq=U64_MAX), data)  # modulo 2^64 that is 6 behind: a late frame
    receiver.receive(_meta(seq=6), data)
    receiver.receive(_meta(seq=6 + 2 ** 62), data)  # far ahead: a discontinuity, not a loss
    for seq in (7, 8, 10):
        receiver.receive(_meta(seq=seq), data)
    assert receiver.lost == 1  # seq 9 only
    assert receiver.seq_jumps == 2  # to 6 + 2^62 and back to 7
    assert receiver.rejected == 0 and receiver.frames_in == 7


def test_gaps_count_lost_frames_and_late_frames_do_not():
    receiver = StreamReceiver()
    data = _jpeg()
    for seq in (1, 2, 5, 4, 5, 6, 6 + MAX_SEQ_GAP):
        receiver.receive(_meta(seq=seq), data)
    assert receiver.lost == 2 + MAX_SEQ_GAP - 1
    assert receiver.seq_jumps == 0


def _h264_stream(count, size=(120, 90)):
    encoder = H264Encoder()
    return [encoder.encode(_rgb(*size, seed=i)) for i in range(count)]


def test_new_session_resets_seq_and_waits_for_an_idr():
    stream = _h264_stream(4)
    receiver = StreamReceiver()
    for seq, (data, key) in enumerate(stream[:3], start=100):
        receiver.receive(_meta(seq=seq, codec='h264', keyframe=key, session_id=1), data)
    # The edge restarted: seq 1 again, new session. Its first frame here is not an IDR (the IDR
    # was lost), so the old decoder must not be used: ask for a key frame instead.
    data, key = stream[3]
    assert not key
    with pytest.raises(ReceiveError) as err:
        receiver.receive(_meta(seq=1, codec='h264', keyframe=False, session_id=2), data)
    assert err.value.want_keyframe
    assert receiver.sessions == 1 and receiver.lost == 0
    # The new session's IDR decodes, and its numbering is followed from there without loss.
    fresh = _h264_stream(2)
    receiver.receive(_meta(seq=2, codec='h264', keyframe=True, session_id=2), fresh[0][0])
    receiver.receive(_meta(seq=3, codec='h264', keyframe=False, session_id=2), fresh[1][0])
    assert receiver.lost == 0 and receiver.seq_jumps == 0


def test_same_session_keeps_decoding():
    stream = _h264_stream(3)
    receiver = StreamReceiver()
    for seq, (data, key) in enumerate(stream, start=1):
        receiver.receive(_meta(seq=seq, codec='h264', keyframe=key, session_id=9), data)
    assert receiver.sessions == 0 and receiver.rejected == 0


def test_default_limits_allow_1080p_but_refuse_8192_squared():
    check_meta(_meta(size=(480, 270), scale=4), 1000)  # 1920x1080 output
    check_meta(_meta(size=(1920, 1080), scale=1, kind=4), 1000)  # its full-resolution probe
    with pytest.raises(ReceiveError, match='exceeds max_'):
        check_meta(_meta(size=(2048, 2048), scale=4), 70_000)  # -> 8192x8192
    with pytest.raises(ReceiveError, match='max_output_pixels'):
        check_meta(_meta(size=(960, 720), scale=4), 70_000)  # -> 3840x2880
    with pytest.raises(ReceiveError, match='max_input_pixels'):
        check_meta(_meta(size=(4096, 2048), scale=1), 70_000)
    with pytest.raises(ReceiveError, match='max_payload_bytes'):
        check_meta(_meta(), 50_000_000)


def test_large_declared_original_is_rejected_before_decoding(monkeypatch):
    receiver = StreamReceiver(ReceiveLimits(max_output_pixels=480 * 360))
    monkeypatch.setattr(receiver, '_decode', lambda *a: pytest.fail('decoded anyway'))
    data = _jpeg(size=(240, 180))
    with pytest.raises(ReceiveError, match='max_output_pixels'):
        receiver.receive(_meta(size=(240, 180), scale=4), data)  # would be 960x720
    assert receiver.rejected == 1


def test_jpeg_header_larger_than_declared_is_rejected_before_decoding():
    receiver = StreamReceiver(ReceiveLimits(max_input_pixels=120 * 90))
    big = _jpeg(size=(640, 480))  # within the bytes bound, declared small
    with pytest.raises(ReceiveError, match='640x480'):
        receiver.receive(_meta(size=(120, 90), scale=4), big)


def test_h264_sps_beyond_max_pixels_is_refused_by_the_decoder():
    data, key = H264Encoder().encode(_rgb(640, 480))
    assert key
    with pytest.raises(CodecError):
        H264Decoder(max_pixels=320 * 240).decode(data, 160, 120)
    assert H264Decoder(max_pixels=640 * 480).decode(data, 640, 480).shape == (480, 640, 3)


def test_limits_validate():
    with pytest.raises(ValueError, match='max_payload_bytes'):
        ReceiveLimits(max_payload_bytes=0).validate()
    with pytest.raises(ValueError, match='max_input_pixels'):
        StreamReceiver(ReceiveLimits(max_input_pixels=1.5))


def test_codec_string_from_peer_is_escaped_and_truncated():
    forged = 'jpeg\n[ERROR] [cloud]: forged line' + 'x' * 10_000
    with pytest.raises(ReceiveError) as err:
        check_meta(_meta(codec=forged), 100)
    reason = str(err.value)
    assert '\n' not in reason and '\\n' in reason
    assert len(reason) < 200 and 'chars)' in reason


def test_probe_twin_of_another_size_is_a_rejection():
    probe = _meta(size=(480, 360), scale=1, kind=4)
    check_probe_twin(probe, (480, 360))
    with pytest.raises(ReceiveError, match='does not match'):
        check_probe_twin(probe, (640, 480))


def test_rejections_counted_from_two_threads_are_all_kept():
    """The receive thread rejects frames while the inference thread counts its own rejections.

    Python's switch interval is made tiny so threads interleave as often as they can; an
    unlocked read-modify-write of the counter can then lose counts (the review's finding).
    """
    receiver = StreamReceiver(ReceiveLimits(max_frame_rate_hz=float('inf')))
    rounds = 2000

    def receive_thread():
        for seq in range(1, rounds + 1):
            with pytest.raises(ReceiveError):
                receiver.receive(_meta(seq=seq, codec='vp9'), b'x')

    def inference_thread():
        for _ in range(rounds):
            receiver.count_rejected()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=receive_thread),
                   threading.Thread(target=inference_thread)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert receiver.rejected == 2 * rounds
    with pytest.raises(AttributeError):
        receiver.rejected = 0  # only count_rejected() changes it
