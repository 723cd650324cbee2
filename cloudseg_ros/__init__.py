"""CloudSeg for ROS 2: low-resolution uplink, super-resolution and segmentation in the cloud.

The generated interfaces (`cloudseg_ros.msg`) may live in another directory than this source tree
(the venv build installs them under `.venv/cloudseg_msgs_py`), so the package path is extended
over every `cloudseg_ros` directory on `sys.path`.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
