"""Reading camera frames from rosbag2 MCAP files, with bags the tests write themselves."""
import os

import numpy as np
import pytest

from cloudseg_ros.core.bag_source import BagSource, is_bag
from cloudseg_ros.core.sources import FrameSource, SourceError, open_source

pytest.importorskip('mcap_ros2')
STAMP0 = 1_700_000_000 * 10**9


def _frames(n, h=24, w=32):
    """Distinct frames: a gradient plus an offset per frame."""
    grad = np.arange(w, dtype=np.uint8)[None, :, None].repeat(h, 0).repeat(3, 2)
    return [(grad + (i * 20) % 200).astype(np.uint8) for i in range(n)]


def test_raw_bag_keeps_pixels_stamps_and_frame_id(tmp_path, write_image_bag):
    frames = _frames(5)
    path = write_image_bag(str(tmp_path / 'raw.mcap'), {
        '/cam/image_raw': {'frames': frames, 'frame_id': 'cam_optical'}})
    source = BagSource(path, loop=False)
    assert source.topic == '/cam/image_raw' and len(source) == 5
    got = [source.read_frame() for _ in range(5)]
    assert source.read_frame() is None
    for i, frame in enumerate(got):
        np.testing.assert_array_equal(frame.rgb, frames[i])
        assert frame.stamp_ns == STAMP0 + i * 10**8 and frame.log_time_ns == frame.stamp_ns
        assert frame.frame_id == 'cam_optical'
    assert source.native_fps == pytest.approx(10.0)


def test_compressed_bag_decodes_and_loops(tmp_path, write_image_bag):
    frames = _frames(3)
    path = write_image_bag(str(tmp_path / 'jpeg.mcap'), {
        'image/compressed': {'frames': frames, 'format': 'png'}})
    source = open_source(path, loop=True)
    assert isinstance(source, BagSource) and source.compressed
    got = [source.read_frame() for _ in range(7)]
    for i, frame in enumerate(got):
        np.testing.assert_array_equal(frame.rgb, frames[i % 3])  # PNG: lossless
    assert got[3].stamp_ns == got[0].stamp_ns  # a loop replays the recorded stamps


def test_bag_folder_plays_files_in_metadata_order(tmp_path, write_image_bag):
    folder = tmp_path / 'bag'
    folder.mkdir()
    frames = _frames(4)
    write_image_bag(str(folder / 'b_1.mcap'), {'/img': {'frames': frames[2:],
                                                        'stamp0_ns': STAMP0 + 2 * 10**8}})
    write_image_bag(str(folder / 'a_0.mcap'), {'/img': {'frames': frames[:2]}})
    (folder / 'metadata.yaml').write_text(
        'rosbag2_bagfile_information:\n  version: 9\n  storage_identifier: mcap\n'
        '  relative_file_paths: [a_0.mcap, b_1.mcap]\n')
    assert is_bag(str(folder))
    source = open_source(str(folder), loop=False)
    stamps = [f.stamp_ns for f in iter(source.read_frame, None)]
    assert stamps == [STAMP0 + i * 10**8 for i in range(4)]


def test_ambiguous_topics_are_listed_and_topic_chooses(tmp_path, write_image_bag):
    path = write_image_bag(str(tmp_path / 'two.mcap'), {
        '/left': {'frames': _frames(2)}, '/right': {'frames': _frames(3), 'format': 'jpeg'}})
    with pytest.raises(SourceError, match=r"2 image topics.*/left, /right"):
        BagSource(path)
    assert len(BagSource(path, topic='/right')) == 3
    with pytest.raises(SourceError, match="no topic '/middle'.*/left"):
        BagSource(path, topic='/middle')


def test_bag_without_image_topics(tmp_path, write_image_bag):
    header = {'stamp': {'sec': 1, 'nanosec': 0}, 'frame_id': ''}
    path = write_image_bag(str(tmp_path / 'stats.mcap'), {'/status': {
        'type': 'std_msgs/msg/Header', 'messages': [header, header]}})
    with pytest.raises(SourceError, match=r"no sensor_msgs/Image.*/status \(std_msgs/msg/Header"):
        open_source(path)
    with pytest.raises(SourceError, match='not an Image'):
        BagSource(path, topic='/status')


def test_unknown_encoding_is_refused_at_open(tmp_path, write_image_bag):
    path = write_image_bag(str(tmp_path / 'depth.mcap'), {
        '/cam': {'frames': _frames(2), 'encoding': '32FC1'}})
    with pytest.raises(SourceError, match="unsupported image encoding '32FC1'"):
        BagSource(path)


def test_truncated_file_is_a_clear_error(tmp_path, write_image_bag):
    path = write_image_bag(str(tmp_path / 'full.mcap'), {'/cam': {'frames': _frames(20)}})
    data = open(path, 'rb').read()
    cut = tmp_path / 'cut.mcap'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(SourceError, match='truncated'):
        open_source(str(cut))
    not_mcap = tmp_path / 'text.mcap'
    not_mcap.write_text('hello')
    with pytest.raises(SourceError, match='not an MCAP'):
        open_source(str(not_mcap))


def test_undecodable_compressed_frames_are_counted(tmp_path, write_image_bag):
    header = {'stamp': {'sec': 5, 'nanosec': 0}, 'frame_id': 'c'}
    good = write_image_bag(str(tmp_path / 'g.mcap'),
                           {'/c': {'frames': _frames(1), 'format': 'png'}})
    good_msg = next(BagSource(good)._iter_messages())[1]
    bad = {'header': header, 'format': 'jpeg', 'data': b'\xff\xd8 not a jpeg'}
    png = {'header': header, 'format': 'png', 'data': bytes(good_msg.data)}
    path = write_image_bag(str(tmp_path / 'mixed.mcap'), {'/c': {
        'type': 'sensor_msgs/msg/CompressedImage', 'messages': [png, bad, png]}})
    source = BagSource(path, loop=False)
    assert len(list(source.frames())) == 2
    assert source.skipped == 1


def test_open_source_keeps_videos_and_folders(tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((8, 8, 3), np.uint8))
    assert isinstance(open_source(str(tmp_path)), FrameSource)
    with pytest.raises(SourceError, match='applies to bags only'):
        open_source(str(tmp_path), topic='/cam')
    with pytest.raises(SourceError, match='does not exist'):
        open_source(os.path.join(str(tmp_path), 'missing.mcap'))


def test_clip_tools_and_demo_read_bags(tmp_path, write_image_bag):
    """bench-stream / profile (load_clip) and demo / soak (input_error) take a bag --input."""
    import argparse
    from cloudseg_ros.tools.demo import input_error
    from cloudseg_ros.tools.stream_eval import load_clip
    path = write_image_bag(str(tmp_path / 'clip.mcap'), {
        '/a': {'frames': _frames(6), 'period_ns': 50_000_000}, '/b': {'frames': _frames(2)}})
    clip = load_clip(path, topic='/a')
    assert len(clip.frames) == 6 and clip.fps == pytest.approx(20.0)  # /a's own pace
    assert BagSource(path, topic='/b').native_fps == pytest.approx(10.0)
    with pytest.raises(ValueError, match='2 image topics'):
        load_clip(path)
    assert input_error(argparse.Namespace(input=path, topic='/b')) is None
    assert '2 image topics' in input_error(argparse.Namespace(input=path, topic=''))


def test_bgr8_frames_are_converted_like_the_edge_does(tmp_path, write_image_bag):
    frames = [f.copy() for f in _frames(2)]
    for f in frames:
        f[..., 0] = 200  # channels differ, so a missing swap shows
    path = write_image_bag(str(tmp_path / 'bgr.mcap'), {
        '/cam': {'frames': frames, 'encoding': 'bgr8'}})
    rgb = BagSource(path).read()
    assert np.array_equal(rgb, frames[0][..., ::-1])
