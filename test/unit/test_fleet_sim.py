"""`cloudseg fleet-sim`: the report follows from the assignment it simulates."""
from cloudseg_ros.tools.fleet_sim import parse_args, simulate


def test_losing_and_regaining_a_server():
    report = simulate(parse_args(['--robots', '200', '--servers', '3', '--gpus', '2',
                                  '--fail-server', '1']))
    lost = report['server_lost']
    assert report['all_up']['gpus'] == 6 and lost['gpus'] == 4
    assert 0 < lost['orphans'] <= lost['moved']
    assert lost['moved_not_orphans'] == lost['moved'] - lost['orphans']
    # Back to the same membership, back to the same assignment.
    assert report['server_back']['same_as_before']
    assert lost['robots_per_gpu_max'] * 4 >= 200
    failover = report['failover_s']
    assert abs(failover['total'] - failover['detect'] - failover['reassign']
               - failover['hold_down'] - failover['next_key_frame']) <= 0.011
