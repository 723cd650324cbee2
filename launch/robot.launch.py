"""Robot side: edge node and adaptive controller (and, for demos, the replay camera).

Examples:
ros2 launch cloudseg_ros robot.launch.py namespace:=robot1 camera_topic:=/camera/image_raw
ros2 launch cloudseg_ros robot.launch.py use_replay:=true source:=/data/clip.mp4

The camera and edge get the robot's Fast DDS profile (config/fastdds_robot.xml, or the file in
FASTDDS_DEFAULT_PROFILES_FILE, or dds_profile:=...): HD camera images go through shared memory.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from cloudseg_ros.ros.launch_lifecycle import managed_node


def _check_replay_source(context):
    """A replay camera without a source would publish nothing: stop the launch and say why."""
    use_replay = LaunchConfiguration('use_replay').perform(context).strip().lower()
    if use_replay in ('true', '1', 'yes', 'on') and not LaunchConfiguration(
            'source').perform(context).strip():
        raise RuntimeError('use_replay:=true needs source:=<video file, image folder or '
                           'dataset split> (the replay camera has nothing to publish)')
    return []


def generate_launch_description():
    """Edge node and controller, plus the replay camera when use_replay is true."""
    share = get_package_share_directory('cloudseg_ros')
    namespace = LaunchConfiguration('namespace')
    params_file = LaunchConfiguration('params_file')
    sim_time = {'use_sim_time': LaunchConfiguration('use_sim_time')}
    # Only these processes get the profile: a cloud node started by the same launch (demo)
    # keeps its own. The profile's endpoint settings are read only with the second variable.
    dds_env = {'FASTDDS_DEFAULT_PROFILES_FILE': LaunchConfiguration('dds_profile'),
               'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='robot1',
                              description='Namespace of this robot (topics are relative); '
                              'robot1 and /robot1 are the same.'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'robot.yaml'),
                              description='Parameters of camera_replay and edge.'),
        DeclareLaunchArgument('controller_params_file',
                              default_value=os.path.join(share, 'config', 'controller.yaml'),
                              description='Parameters of the controller.'),
        DeclareLaunchArgument('camera_topic', default_value='image_raw',
                              description='Image topic of the robot camera (sensor_msgs/Image; '
                              'with transport:=compressed, its /compressed topic is read).'),
        DeclareLaunchArgument('transport', default_value='raw',
                              description='raw: read camera_topic (sensor_msgs/Image); '
                              'compressed: read camera_topic/compressed (JPEG or PNG).'),
        DeclareLaunchArgument('use_replay', default_value='false',
                              description='Start the replay camera instead of a real driver '
                              '(needs source:=).'),
        DeclareLaunchArgument('source', default_value='',
                              description='Video/image folder for the replay camera.'),
        DeclareLaunchArgument('use_controller', default_value='true',
                              description='Start the adaptive controller, which retunes the '
                              'edge to the uplink.'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Stamp with /clock time (e.g. ros2 bag play --clock).'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='Configure and activate the (lifecycle) edge node; '
                              'false: it waits unconfigured for ros2 lifecycle or a manager.'),
        DeclareLaunchArgument(
            'dds_profile', description='Fast DDS profile of the robot-side processes '
            '(fastdds_robot_wan.xml across a WAN; the camera driver needs the same one).',
            default_value=EnvironmentVariable(
                'FASTDDS_DEFAULT_PROFILES_FILE',
                default_value=os.path.join(share, 'config', 'fastdds_robot.xml'))),
        OpaqueFunction(function=_check_replay_source),
        Node(package='cloudseg_ros', executable='camera_replay', name='camera_replay',
             namespace=namespace, condition=IfCondition(LaunchConfiguration('use_replay')),
             parameters=[params_file, {'source': LaunchConfiguration('source')}, sim_time],
             remappings=[('image_raw', LaunchConfiguration('camera_topic'))],
             additional_env=dds_env),
        *managed_node(
            LaunchConfiguration('autostart'), package='cloudseg_ros', executable='edge',
            name='edge', namespace=namespace,
            parameters=[params_file, sim_time, {'transport': LaunchConfiguration('transport')}],
            # A remapping matches whole names: the compressed topic needs its own.
            remappings=[('image_raw', LaunchConfiguration('camera_topic')),
                        ('image_raw/compressed',
                         [LaunchConfiguration('camera_topic'), '/compressed'])],
            additional_env=dds_env),
        Node(package='cloudseg_ros', executable='controller', name='controller',
             namespace=namespace, condition=IfCondition(LaunchConfiguration('use_controller')),
             parameters=[LaunchConfiguration('controller_params_file'), sim_time]),
    ])
