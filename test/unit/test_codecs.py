"""Unit tests for cloudseg_ros.core.codecs (JPEG and low-latency H.264)."""
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from cloudseg_ros.core import codecs
from cloudseg_ros.core.codecs import (CODECS, CodecError, EncodedImage, FrameDecoder,
                                      FrameEncoder, H264Decoder, H264Encoder, decode_jpeg,
                                      encode_jpeg, jpeg_size, nal_unit_types)
from cloudseg_ros.core.imageops import downsample
from cloudseg_ros.core.metrics import psnr

DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'camvid11'
SLICE_TYPES = (1, 5)  # non-IDR and IDR coded slices
NAL_SPS, NAL_PPS, NAL_IDR = 7, 8, 5


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    """Smooth luma texture with mild colour, compressible like a natural scene.

    A saturated random colour field would lose most of its PSNR to 4:2:0 chroma alone.
    """
    rng = np.random.default_rng(seed)
    luma = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 1)).astype(np.float32)
    tint = rng.uniform(-30, 30, (height // 32 + 1, width // 32 + 1, 3)).astype(np.float32)
    size = (width, height)
    luma = cv2.resize(luma, size, interpolation=cv2.INTER_CUBIC)[..., None]
    tint = cv2.resize(tint, size, interpolation=cv2.INTER_CUBIC)
    return np.clip(luma + tint, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def camvid_frame() -> np.ndarray:
    """First CamVid val frame (480x360); the tests that need real content skip without it."""
    paths = sorted((DATA / 'val' / 'images').glob('*.jpg'))
    if not paths:
        pytest.skip(f'CamVid data not found at {DATA}')
    return _read(paths[0])


@pytest.fixture(scope='module')
def clip() -> List[np.ndarray]:
    """12 consecutive 480x360 frames: CamVid val if present, else a panning texture."""
    paths = sorted((DATA / 'val' / 'images').glob('*.jpg'))[:12]
    if paths:
        return [_read(p) for p in paths]
    wide = _texture(0, 360, 480 + 12 * 3)
    return [np.ascontiguousarray(wide[:, 3 * i:3 * i + 480]) for i in range(12)]


def _encode_all(encoder: H264Encoder, frames: List[np.ndarray], force_at=()) -> List[tuple]:
    return [encoder.encode(f, force_keyframe=i in force_at) for i, f in enumerate(frames)]


# -- JPEG ----------------------------------------------------------------------------------------


def test_jpeg_round_trip_psnr(camvid_frame):
    data = encode_jpeg(camvid_frame, 80)
    assert data[:2] == b'\xff\xd8'
    assert jpeg_size(data) == (480, 360)
    out = decode_jpeg(data)
    assert out.shape == camvid_frame.shape and out.dtype == np.uint8
    assert psnr(out, camvid_frame) > 30.0


def test_jpeg_size_shrinks_with_quality(camvid_frame):
    sizes = [len(encode_jpeg(camvid_frame, q)) for q in (95, 80, 50, 20)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[-1]


@pytest.mark.parametrize('quality', [0, 101, 50.5, True])
def test_jpeg_rejects_bad_quality(quality):
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((8, 8, 3), np.uint8), quality)


def test_jpeg_rejects_bad_image():
    with pytest.raises(CodecError, match='uint8'):
        encode_jpeg(np.zeros((8, 8, 3), np.float32))


def test_jpeg_odd_size_and_non_contiguous_input():
    img = _texture(1, 91, 121)
    out = decode_jpeg(encode_jpeg(img[:, ::-1], 90))  # a flipped view is not contiguous
    assert out.shape == (91, 121, 3)
    assert psnr(out, img[:, ::-1]) > 28.0


def test_jpeg_garbage_raises_codec_error():
    for bad in (b'', b'not a jpeg at all', b'\xff\xd8\xff' + bytes(50)):
        with pytest.raises(CodecError):
            decode_jpeg(bad)


def test_jpeg_cv2_fallback_without_simplejpeg(monkeypatch):
    img = _texture(3, 90, 120)
    monkeypatch.setattr(codecs, 'simplejpeg', None)
    data = encode_jpeg(img, 90)
    assert jpeg_size(data) == (120, 90)
    assert psnr(decode_jpeg(data), img) > 30.0
    with pytest.raises(CodecError):
        decode_jpeg(b'not a jpeg at all')


# -- H.264 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('scale', [4, 1])  # 120x90 and 480x360
def test_h264_round_trip(clip, scale):
    frames = [downsample(f, scale) for f in clip[:6]]
    encoded = _encode_all(H264Encoder(crf=23), frames)
    assert [key for _, key in encoded] == [True] + [False] * 5
    decoder = H264Decoder()
    for (data, _), frame in zip(encoded, frames):
        out = decoder.decode(data, frame.shape[1], frame.shape[0])
        assert out.shape == frame.shape and out.dtype == np.uint8
        assert psnr(out, frame) > 28.0
    assert not decoder.needs_keyframe


def test_h264_one_access_unit_per_frame(clip):
    frames = [downsample(f, 4) for f in clip]
    frames = frames + frames[::-1] + frames  # 36 frames: longer than ffmpeg's default GOP of 12
    encoded = _encode_all(H264Encoder(), frames)
    for index, (data, key) in enumerate(encoded):
        types = nal_unit_types(data)
        assert sum(t in SLICE_TYPES for t in types) == 1  # exactly this frame, nothing delayed
        if key:
            assert {NAL_SPS, NAL_PPS, NAL_IDR} <= set(types)
        else:
            assert NAL_IDR not in types and NAL_SPS not in types
    assert sum(key for _, key in encoded) == 1  # no periodic or scene-cut IDRs


def test_h264_forced_idr_lets_a_new_decoder_join(clip):
    frames = [downsample(f, 4) for f in clip[:8]]
    encoded = _encode_all(H264Encoder(), frames, force_at={4})
    assert [key for _, key in encoded] == [True, False, False, False, True, False, False, False]
    late = H264Decoder()  # joins mid-stream: SPS/PPS must come with the forced IDR
    for (data, _), frame in zip(encoded[4:], frames[4:]):
        assert psnr(late.decode(data, 120, 90), frame) > 28.0


def test_h264_resolution_change_restarts_stream(clip):
    encoder = H264Encoder()
    decoder = H264Decoder()
    for frame in (downsample(clip[0], 4), downsample(clip[1], 4)):
        decoder.decode(encoder.encode(frame)[0], 120, 90)
    assert encoder.size == (120, 90)
    half = downsample(clip[2], 2)
    data, key = encoder.encode(half)
    assert key and encoder.size == (240, 180)
    assert decoder.decode(data, 240, 180).shape == (180, 240, 3)
    data, key = encoder.encode(downsample(clip[3], 2))
    assert not key and decoder.decode(data, 240, 180).shape == (180, 240, 3)


def test_h264_decoder_refuses_p_frame_until_idr(clip):
    frames = [downsample(f, 4) for f in clip[:8]]
    encoded = _encode_all(H264Encoder(), frames, force_at={5})
    decoder = H264Decoder()
    assert decoder.needs_keyframe
    for data, _ in encoded[1:5]:
        with pytest.raises(CodecError, match='keyframe'):
            decoder.decode(data, 120, 90)
        assert decoder.needs_keyframe
    assert psnr(decoder.decode(encoded[5][0], 120, 90), frames[5]) > 28.0
    assert not decoder.needs_keyframe
    assert psnr(decoder.decode(encoded[6][0], 120, 90), frames[6]) > 28.0


def test_h264_corrupt_data_raises_then_recovers(clip):
    frames = [downsample(f, 4) for f in clip[:6]]
    encoded = _encode_all(H264Encoder(), frames, force_at={4})
    decoder = H264Decoder()
    decoder.decode(encoded[0][0], 120, 90)
    damaged = bytearray(encoded[1][0])
    for pos in range(8, len(damaged), 11):
        damaged[pos] ^= 0x5A
    with pytest.raises(CodecError):
        decoder.decode(bytes(damaged), 120, 90)
    assert decoder.needs_keyframe
    with pytest.raises(CodecError):  # the P-frame after the damage has no valid reference
        decoder.decode(encoded[2][0], 120, 90)
    assert psnr(decoder.decode(encoded[4][0], 120, 90), frames[4]) > 28.0


@pytest.mark.parametrize('payload', [b'', bytes(100), np.random.default_rng(5).bytes(400)])
def test_h264_garbage_raises(payload):
    decoder = H264Decoder()
    with pytest.raises(CodecError):
        decoder.decode(payload, 120, 90)
    assert decoder.needs_keyframe


def test_h264_odd_size_is_padded_and_cropped():
    frames = [_texture(2, 91, 121)] * 3
    encoder = H264Encoder(crf=20)
    decoder = H264Decoder()
    for frame in frames:
        data, _ = encoder.encode(frame)
        out = decoder.decode(data, 121, 91)
        assert out.shape == (91, 121, 3)
        # luma: saturated random colours lose ~27 dB to 4:2:0 chroma alone, whatever the size
        luma_in = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        luma_out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        assert psnr(luma_out, luma_in) > 38.0
        assert psnr(luma_out[:, -1], luma_in[:, -1]) > 32.0  # the last (padded) column
        assert psnr(luma_out[-1], luma_in[-1]) > 32.0


def test_h264_declared_size_mismatch_raises(clip):
    data, _ = H264Encoder().encode(downsample(clip[0], 4))
    with pytest.raises(CodecError, match='declared'):
        H264Decoder().decode(data, 240, 180)


@pytest.mark.parametrize('kwargs', [{'crf': 52}, {'crf': -1}, {'preset': 'warp'}])
def test_h264_encoder_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        H264Encoder(**kwargs)


def test_h264_lower_crf_means_more_bytes(clip):
    frame = downsample(clip[0], 2)
    sizes = [len(H264Encoder(crf=crf).encode(frame)[0]) for crf in (18, 28, 38)]
    assert sizes[0] > sizes[1] > sizes[2]


# -- unified interface ---------------------------------------------------------------------------


@pytest.mark.parametrize('codec', CODECS)
def test_frame_encoder_decoder_round_trip(clip, codec):
    encoder = FrameEncoder(codec=codec)
    decoder = FrameDecoder()
    for frame in clip[:3]:
        small = downsample(frame, 2)
        encoded = encoder.encode(small)
        assert isinstance(encoded, EncodedImage)
        assert (encoded.codec, encoded.width, encoded.height) == (codec, 240, 180)
        out = decoder.decode(encoded.codec, bytearray(encoded.data), 240, 180)
        assert psnr(out, small) > 28.0
    assert encoder.encode(small, force_keyframe=True).keyframe


def test_frame_encoder_keyframe_flags(clip):
    encoder = FrameEncoder(codec='h264')
    keys = [encoder.encode(downsample(f, 4)).keyframe for f in clip[:3]]
    assert keys == [True, False, False]
    encoder.reconfigure(jpeg_quality=50)  # JPEG setting only: H.264 stream continues
    assert not encoder.encode(downsample(clip[3], 4)).keyframe
    encoder.reconfigure(h264_crf=35)  # new CRF restarts the stream
    assert encoder.encode(downsample(clip[4], 4)).keyframe
    encoder.reconfigure(codec='jpeg')
    assert encoder.encode(downsample(clip[5], 4)).keyframe  # every JPEG stands alone
    encoder.reconfigure(codec='h264')
    assert encoder.encode(downsample(clip[6], 4)).keyframe
    assert not encoder.encode(downsample(clip[7], 4)).keyframe
    encoder.reconfigure(h264_preset='veryfast')  # a new preset restarts the stream too
    assert encoder.encode(downsample(clip[8], 4)).keyframe


def test_a_slower_preset_sends_fewer_bits_at_the_same_crf(clip):
    sizes = {}
    for preset in ('ultrafast', 'veryfast'):
        encoder = FrameEncoder(codec='h264', h264_preset=preset)
        sizes[preset] = sum(len(encoder.encode(downsample(f, 2)).data) for f in clip)
    assert sizes['veryfast'] < 0.8 * sizes['ultrafast'], sizes


@pytest.mark.parametrize('kwargs', [{'codec': 'vp9'}, {'jpeg_quality': 0}, {'h264_crf': 60},
                                    {'h264_preset': 'turbo'}])
def test_frame_encoder_rejects_bad_settings_atomically(kwargs):
    encoder = FrameEncoder()
    with pytest.raises(ValueError):
        encoder.reconfigure(**{'jpeg_quality': 70, **kwargs})
    assert (encoder.codec, encoder.jpeg_quality, encoder.h264_crf) == ('jpeg', 80, 28)
    with pytest.raises(ValueError):
        FrameEncoder(**kwargs)


def test_frame_decoder_rejects_unknown_codec_and_size_mismatch(clip):
    decoder = FrameDecoder()
    data = encode_jpeg(downsample(clip[0], 4))
    with pytest.raises(CodecError, match='unknown codec'):
        decoder.decode('png', data, 120, 90)
    with pytest.raises(CodecError, match='declared'):
        decoder.decode('jpeg', data, 121, 90)
    with pytest.raises(CodecError):
        decoder.decode('jpeg', data, 0, 90)
    with pytest.raises(CodecError):
        decoder.decode('jpeg', b'\x00garbage', 120, 90)
    assert decoder.decode('jpeg', data, 120, 90).shape == (90, 120, 3)


def test_frame_decoder_h264_needs_keyframe_property(clip):
    encoder = FrameEncoder(codec='h264')
    decoder = FrameDecoder()
    first = encoder.encode(downsample(clip[0], 4))
    second = encoder.encode(downsample(clip[1], 4))
    assert decoder.needs_keyframe
    with pytest.raises(CodecError):
        decoder.decode('h264', second.data, 120, 90)
    decoder.decode('h264', first.data, 120, 90)
    assert not decoder.needs_keyframe
