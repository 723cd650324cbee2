"""Cloud side: the SR + segmentation node serving one or more robots.

Example: ros2 launch cloudseg_ros cloud.launch.py robots:="['/robot1', '/robot2']"
Several servers sharing those robots (docs/SCALING.md): the same robots:= and server_pool:=fleet
on every server.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration

from cloudseg_ros.ros.launch_lifecycle import managed_node


def generate_launch_description():
    """Launch the cloud node with the shipped cloud.yaml unless another params_file is given."""
    share = get_package_share_directory('cloudseg_ros')
    return LaunchDescription([
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'cloud.yaml'),
                              description='Parameters of the cloud node.'),
        DeclareLaunchArgument('robots', default_value="['/robot1']",
                              description='Namespaces of the robots to serve (a YAML list).'),
        DeclareLaunchArgument('device', default_value='auto',
                              description="Torch device: auto, cpu, cuda, cuda:N."),
        DeclareLaunchArgument('models_dir', default_value='',
                              description="Folder of the weights ('' = the package's models/; "
                              'cloudseg adapt writes such a folder).'),
        DeclareLaunchArgument('server_pool', default_value='',
                              description="Pool of servers sharing the robots ('' = this "
                              'server serves every robot listed).'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Stamp with /clock time (e.g. ros2 bag play --clock).'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='Configure and activate the (lifecycle) cloud node; '
                              'false: it waits unconfigured for ros2 lifecycle or a manager.'),
        *managed_node(
            LaunchConfiguration('autostart'), package='cloudseg_ros', executable='cloud',
            name='cloud', namespace='', output='screen',
            parameters=[LaunchConfiguration('params_file'), {
                # A substitution in a parameter dict is read as YAML: "['/robot1']" is a list.
                'robot_namespaces': LaunchConfiguration('robots'),
                'device': LaunchConfiguration('device'),
                'models_dir': LaunchConfiguration('models_dir'),
                'server_pool': LaunchConfiguration('server_pool'),
                'use_sim_time': LaunchConfiguration('use_sim_time')}]),
    ])
