"""Everything on one machine: replay camera -> edge -> cloud (-> controller), plus rviz.

Example: ros2 launch cloudseg_ros demo.launch.py source:=/path/to/video.mp4 rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description():
    """Robot and cloud launch files in one, with the bundled clip as the default camera."""
    share = get_package_share_directory('cloudseg_ros')
    namespace = LaunchConfiguration('namespace')
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'robot.launch.py')),
        launch_arguments={'namespace': namespace, 'use_replay': 'true',
                          'source': LaunchConfiguration('source')}.items())
    cloud = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'cloud.launch.py')),
        launch_arguments={'robots': PythonExpression(["str(['/", namespace, "'])"]),
                          'device': LaunchConfiguration('device')}.items())
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='robot1',
                              description='Namespace of the demo robot.'),
        DeclareLaunchArgument('source', description='Video file or image folder to replay.',
                              default_value=os.path.join(share, 'data', 'demo',
                                                         'camvid_val_15fps.mp4')),
        DeclareLaunchArgument('device', default_value='auto',
                              description='Torch device of the cloud node.'),
        DeclareLaunchArgument('controller', default_value='true',
                              description='Run the adaptive controller.'),
        DeclareLaunchArgument('rviz', default_value='false', description='Start rviz2.'),
        robot,
        cloud,
        Node(package='cloudseg_ros', executable='controller', name='controller',
             namespace=namespace, condition=IfCondition(LaunchConfiguration('controller')),
             parameters=[os.path.join(share, 'config', 'controller.yaml')]),
        Node(package='rviz2', executable='rviz2', name='rviz2',
             arguments=['-d', os.path.join(share, 'config', 'cloudseg.rviz')],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
