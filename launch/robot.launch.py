"""Robot side: the edge node (and, for demos, the replay camera) in the robot's namespace.

Examples:
ros2 launch cloudseg_ros robot.launch.py namespace:=robot1 camera_topic:=/camera/image_raw
ros2 launch cloudseg_ros robot.launch.py use_replay:=true source:=/data/clip.mp4

Both nodes get the robot's Fast DDS profile (config/fastdds_robot.xml, or the file in
FASTDDS_DEFAULT_PROFILES_FILE, or dds_profile:=...): HD camera images go through shared memory.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    """Edge node, plus the replay camera when use_replay is true."""
    share = get_package_share_directory('cloudseg_ros')
    namespace = LaunchConfiguration('namespace')
    params_file = LaunchConfiguration('params_file')
    # Only these processes get the profile: a cloud node started by the same launch (demo)
    # keeps its own. The profile's endpoint settings are read only with the second variable.
    dds_env = {'FASTDDS_DEFAULT_PROFILES_FILE': LaunchConfiguration('dds_profile'),
               'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='robot1',
                              description='Namespace of this robot (topics are relative).'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'robot.yaml'),
                              description='Parameters of camera_replay and edge.'),
        DeclareLaunchArgument('camera_topic', default_value='image_raw',
                              description='Image topic of the robot camera (sensor_msgs/Image).'),
        DeclareLaunchArgument('use_replay', default_value='false',
                              description='Start the replay camera instead of a real driver.'),
        DeclareLaunchArgument('source', default_value='',
                              description='Video/image folder for the replay camera.'),
        DeclareLaunchArgument(
            'dds_profile', description='Fast DDS profile of the robot-side processes '
            '(fastdds_robot_wan.xml across a WAN; the camera driver needs the same one).',
            default_value=EnvironmentVariable(
                'FASTDDS_DEFAULT_PROFILES_FILE',
                default_value=os.path.join(share, 'config', 'fastdds_robot.xml'))),
        Node(package='cloudseg_ros', executable='camera_replay', name='camera_replay',
             namespace=namespace, condition=IfCondition(LaunchConfiguration('use_replay')),
             parameters=[params_file, {'source': LaunchConfiguration('source')}],
             remappings=[('image_raw', LaunchConfiguration('camera_topic'))],
             additional_env=dds_env),
        Node(package='cloudseg_ros', executable='edge', name='edge', namespace=namespace,
             parameters=[params_file],
             remappings=[('image_raw', LaunchConfiguration('camera_topic'))],
             additional_env=dds_env),
    ])
