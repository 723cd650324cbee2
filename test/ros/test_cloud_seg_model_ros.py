"""The cloud node with a user's torch.export network (`seg_model`): its classes, its colours."""
import numpy as np
import pytest
from sensor_msgs.msg import Image
import yaml

from cloudseg_ros.core.codecs import FrameEncoder
from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import image_msg_to_rgb

torch = pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
COLORS = [[255, 0, 0], [0, 0, 255]]


class BrightDark(torch.nn.Module):
    """Two classes: 0 where the red channel is bright, 1 where it is dark."""

    def forward(self, x):
        red = x[:, :1] - 0.5
        return torch.cat([red, -red], dim=1)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    from torch.export import Dim
    folder = tmp_path_factory.mktemp('byo')
    auto = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
    program = torch.export.export(BrightDark(), (torch.rand(2, 3, 32, 48),),
                                  dynamic_shapes=(auto,))
    torch.export.save(program, str(folder / 'bright.pt2'))
    meta = {'class_names': ['bright', 'dark'], 'colors': COLORS}
    (folder / 'bright.yaml').write_text(yaml.safe_dump(meta))
    return str(folder / 'bright.pt2')


def test_cloud_serves_masks_of_a_user_model_in_its_colours(launch, ros_node, spin_until,
                                                           exported, tmp_path):
    cloud = launch(CLOUD, params={'robot_namespaces': ['/b1'], 'models_dir': str(tmp_path),
                                  'seg_model': exported, 'sr_variant': 'bilinear',
                                  'device': 'cpu', 'overlay_alpha': 1.0})
    pub = ros_node.create_publisher(EncodedFrame, '/b1/frames', qos.ENCODED_STREAM)
    masks, colors = [], []
    ros_node.create_subscription(Image, '/b1/mask', masks.append, qos.IMAGE)
    ros_node.create_subscription(Image, '/b1/mask_color', colors.append, qos.IMAGE)
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[:, :80, 0] = 255  # left half bright red, right half black
    encoder = FrameEncoder('jpeg')
    seq = 0

    def send():
        nonlocal seq
        seq += 1
        enc = encoder.encode(rgb, force_keyframe=False)
        msg = EncodedFrame(seq=seq, kind=EncodedFrame.KIND_USEFUL, orig_width=320,
                           orig_height=240, width=160, height=120, scale=2, codec=enc.codec,
                           keyframe=enc.keyframe)
        msg.data = enc.data
        pub.publish(msg)
        return bool(masks) and bool(colors)

    assert spin_until(send, 60.0), cloud.log()
    mask = np.frombuffer(masks[-1].data, np.uint8).reshape(240, 320)
    assert mask[:, :150].max() == 0 and mask[:, 170:].min() == 1
    overlay = image_msg_to_rgb(colors[-1]).reshape(-1, 3)
    assert {tuple(int(v) for v in px) for px in np.unique(overlay, axis=0)} == \
        {tuple(c) for c in COLORS}
