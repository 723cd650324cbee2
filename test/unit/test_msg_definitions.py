"""MCAP schema texts built from the installed .msg files, the way rosbag2 concatenates them."""
import pytest

from cloudseg_ros.paths import package_file
from cloudseg_ros.tools.msg_definitions import (SEPARATOR, DefinitionError, definition,
                                                dependencies)


def test_own_type_with_dependencies_once_each():
    text = definition('cloudseg_ros/msg/PipelineStats')
    own = open(package_file('msg', 'PipelineStats.msg')).read()
    assert text.startswith(own.rstrip('\n') + '\n' + SEPARATOR + '\nMSG: std_msgs/Header\n')
    # Time is used by Header and by arrival_stamp: written once.
    assert text.count('MSG: builtin_interfaces/Time\n') == 1
    assert text.count('MSG: ') == 2


def test_dependency_parsing():
    text = ('Header header  # legacy name\nuint8[] data\nstring<=8 name\n'
            'geometry_msgs/Point[<=3] points\nPoint p\nuint8 KIND=1\n# Fake fake\n')
    assert dependencies(text, 'my_pkg') == [('std_msgs', 'Header'), ('geometry_msgs', 'Point'),
                                            ('my_pkg', 'Point')]


def test_the_decoder_accepts_every_recorded_type():
    from mcap_ros2._dynamic import generate_dynamic
    for msg_type in ('cloudseg_ros/msg/EncodedFrame', 'cloudseg_ros/msg/ControllerState',
                     'sensor_msgs/msg/CompressedImage', 'diagnostic_msgs/msg/DiagnosticArray'):
        assert msg_type in generate_dynamic(msg_type, definition(msg_type))


def test_unknown_type_names_where_it_looked():
    with pytest.raises(DefinitionError, match='no definition of nope_msgs/msg/Thing'):
        definition('nope_msgs/msg/Thing')
    with pytest.raises(DefinitionError, match='not a message type name'):
        definition('Thing')
