"""For launch files: start a managed node and bring it to active through its transitions.

The node runs as a launch_ros `LifecycleNode` with its own `autostart` parameter false; when the
launch argument given as `autostart` is true, launch emits `configure` at start and `activate`
once the node reports `inactive` (the launch_ros events, on Humble, Jazzy and Kilted alike:
Jazzy's `LifecycleNode(autostart=...)` does not exist on Humble). With it false the node waits,
unconfigured, for `ros2 lifecycle set` or a lifecycle manager. A failed configure leaves the
node unconfigured: its log says why and launch reports the failed transition. Imported only by
the launch files (launch and launch_ros are not needed to run the nodes).
"""
from launch.actions import EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def managed_node(autostart, **node_args) -> list:
    """[LifecycleNode(**node_args), its activate-when-inactive handler, configure at start].

    `autostart` is a launch substitution ('true' / 'false'); `node_args` are launch_ros Node's
    (`name` and `namespace` required). The node gets `autostart: false` after its parameters.
    """
    node_args['parameters'] = [*node_args.get('parameters', []), {'autostart': False}]
    node = LifecycleNode(**node_args)

    def change_state(transition_id: int, **action_args) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id), **action_args)
    # Once: a later cleanup + configure by hand must leave the node inactive.
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
        entities=[change_state(Transition.TRANSITION_ACTIVATE)], handle_once=True),
        condition=IfCondition(autostart))
    return [node, activate,
            change_state(Transition.TRANSITION_CONFIGURE, condition=IfCondition(autostart))]
