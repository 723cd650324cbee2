"""Everything on one machine: replay camera -> edge -> cloud -> controller, plus rviz.

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
    sim_time = LaunchConfiguration('use_sim_time')
    autostart = LaunchConfiguration('autostart')
    robot = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'robot.launch.py')),
        launch_arguments={'namespace': namespace, 'use_replay': 'true',
                          'source': LaunchConfiguration('source'),
                          'use_controller': LaunchConfiguration('use_controller'),
                          'use_sim_time': sim_time, 'autostart': autostart}.items())
    # 'robot1' and '/robot1' both name the robot in the root namespace.
    robots = PythonExpression(["str(['/' + '", namespace, "'.strip('/')])"])
    cloud = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'cloud.launch.py')),
        launch_arguments={'robots': robots, 'device': LaunchConfiguration('device'),
                          'models_dir': LaunchConfiguration('models_dir'),
                          'use_sim_time': sim_time, 'autostart': autostart}.items())
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='robot1',
                              description='Namespace of the demo robot (robot1 = /robot1).'),
        DeclareLaunchArgument('source', description='Video file or image folder to replay.',
                              default_value=os.path.join(share, 'data', 'demo',
                                                         'camvid_val_15fps.mp4')),
        DeclareLaunchArgument('device', default_value='auto',
                              description='Torch device of the cloud node.'),
        DeclareLaunchArgument('models_dir', default_value='',
                              description="Weights of the cloud node ('' = the package's)."),
        DeclareLaunchArgument('use_controller', default_value='true',
                              description='Run the adaptive controller.'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Stamp with /clock time (e.g. ros2 bag play --clock).'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='Bring edge and cloud (lifecycle nodes) to active; '
                              'false: they wait unconfigured for ros2 lifecycle.'),
        DeclareLaunchArgument('rviz', default_value='false', description='Start rviz2.'),
        robot,
        cloud,
        # In the robot's namespace: the rviz config names relative topics.
        Node(package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
             arguments=['-d', os.path.join(share, 'config', 'cloudseg.rviz')],
             parameters=[{'use_sim_time': sim_time}],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ])
