"""Fixtures shared by every test folder."""
import pytest


@pytest.fixture(scope='session')
def tiny_models(tmp_path_factory):
    """Random-init ICNet and aware CARN-M x2/x4 at test widths, under the shipped file names."""
    pytest.importorskip('torch')
    from cloudseg_ros.inference.model_files import write_tiny_models
    return write_tiny_models(str(tmp_path_factory.mktemp('models')))


def _image_messages(frames, stamp0_ns, period_ns, frame_id, fmt):
    """(log time, message dict) of sensor_msgs/Image (fmt '') or CompressedImage (fmt 'jpeg')."""
    import cv2
    for i, rgb in enumerate(frames):
        t_ns = stamp0_ns + i * period_ns
        header = {'stamp': {'sec': t_ns // 10**9, 'nanosec': t_ns % 10**9}, 'frame_id': frame_id}
        if fmt:
            ok, buf = cv2.imencode('.' + fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            assert ok
            yield t_ns, {'header': header, 'format': fmt, 'data': buf.tobytes()}
        else:
            yield t_ns, {'header': header, 'height': rgb.shape[0], 'width': rgb.shape[1],
                         'encoding': 'rgb8', 'is_bigendian': 0, 'step': rgb.shape[1] * 3,
                         'data': rgb.tobytes()}


@pytest.fixture
def write_image_bag():
    """Return `fn(path, topics)` writing an MCAP bag the way rosbag2 does (ros2msg + CDR).

    `topics` maps a topic name to a dict: `frames` (list of RGB arrays), optional `format`
    ('' raw rgb8, 'jpeg', 'png'), `stamp0_ns`, `period_ns`, `frame_id`, `encoding` (overrides
    rgb8), `type` (another message type, with `messages` as dicts and optional `log_times`).
    Messages are written in log-time order across topics; an image's log time equals its
    header stamp.
    """
    from mcap_ros2.writer import Writer
    from cloudseg_ros.tools.msg_definitions import definition

    def _write(path, topics):
        records = []
        with open(path, 'wb') as f:
            writer = Writer(f)
            for topic, spec in topics.items():
                fmt = spec.get('format', '')
                msg_type = spec.get('type') or ('sensor_msgs/msg/CompressedImage' if fmt
                                                else 'sensor_msgs/msg/Image')
                schema = writer.register_msgdef(msg_type, definition(msg_type))
                if 'messages' in spec:
                    times = spec.get('log_times') or [spec.get('stamp0_ns', 10**9) + i for i
                                                      in range(len(spec['messages']))]
                    items = list(zip(times, spec['messages']))
                else:
                    items = list(_image_messages(
                        spec['frames'], spec.get('stamp0_ns', 1_700_000_000 * 10**9),
                        spec.get('period_ns', 10**8), spec.get('frame_id', 'cam'), fmt))
                for t_ns, msg in items:
                    if 'encoding' in spec:
                        msg['encoding'] = spec['encoding']
                    records.append((t_ns, topic, schema, msg))
            for t_ns, topic, schema, msg in sorted(records, key=lambda r: r[0]):
                writer.write_message(topic, schema, msg, log_time=t_ns, publish_time=t_ns)
            writer.finish()
        return path
    return _write
