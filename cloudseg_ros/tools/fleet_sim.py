"""`cloudseg fleet-sim`: the robot -> GPU assignment and its failover, simulated at fleet size.

Lays out --servers x --gpus engines, assigns --robots robots with `core/fleet_assign.py` (the
function the cloud node uses for its own engines), then removes one server and brings it back,
and reports: robots per GPU (balance), robots moved by each change (a moved robot that was not
on the lost server is one that two servers might both serve while their views differ), the
time to recompute the assignment, whether the surviving GPUs can carry the fleet at the
measured masks/s per GPU, the uplink per server, and the failover time budget against the 5 s
target: detection (the lost server's liveliness lease), recomputation, a hold-down before a
server takes on robots (so that a robot is never served by two servers whose views of the
membership differ: the old owner drops it at once, the new one waits one lease), and the
robot's next key frame. Pure computation: no ROS, no GPU.
"""
import argparse
import json
import time
from typing import Dict, List, Optional

from cloudseg_ros.core.fleet_assign import assign, loads, moved

# Per frame on the uplink, 2048x1024 JPEG q80 sent at x4 (README, bench-edge).
DEFAULT_FRAME_BYTES = 25095


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg fleet-sim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--robots', type=int, default=1000)
    parser.add_argument('--servers', type=int, default=11)
    parser.add_argument('--gpus', type=int, default=8, help='GPUs (engines) per server')
    parser.add_argument('--fps', type=float, default=15.0, help='frames/s per robot')
    parser.add_argument('--gpu-masks-per-s', type=float, default=200.0,
                        help='masks/s one GPU delivers through the node (bench-fleet)')
    parser.add_argument('--frame-bytes', type=int, default=DEFAULT_FRAME_BYTES,
                        help='uplink bytes per frame')
    parser.add_argument('--slack', type=float, default=0.1, help='room above the fair share')
    parser.add_argument('--lease-s', type=float, default=2.0,
                        help='liveliness lease after which a silent server is declared lost')
    parser.add_argument('--hold-down-s', type=float, default=2.0,
                        help='wait before serving robots taken over (no double service)')
    parser.add_argument('--fail-server', type=int, default=0, help='which server is lost')
    parser.add_argument('--json', default='', help='also write the report here')
    return parser.parse_args(argv)


def _timed_assign(robots, slots, slack):
    start = time.perf_counter()
    result = assign(robots, slots, slack)
    return result, (time.perf_counter() - start) * 1e3


def _balance(assignment: Dict[str, str], slots: List[str]) -> Dict:
    counts = loads(assignment, slots)
    return {'gpus': len(slots), 'robots_per_gpu_min': min(counts),
            'robots_per_gpu_max': max(counts),
            'robots_per_gpu_mean': round(sum(counts) / len(counts), 2)}


def simulate(args: argparse.Namespace) -> Dict:
    """Assign, lose one server, bring it back; the figures of each step."""
    robots = [f'/robot{i}' for i in range(args.robots)]
    slots = [f'server{s}/cuda:{g}' for s in range(args.servers) for g in range(args.gpus)]
    lost = f'server{args.fail_server}/'
    survivors = [s for s in slots if not s.startswith(lost)]
    full, full_ms = _timed_assign(robots, slots, args.slack)
    degraded, degraded_ms = _timed_assign(robots, survivors, args.slack)
    healed, healed_ms = _timed_assign(robots, slots, args.slack)
    orphans = sum(1 for slot in full.values() if slot.startswith(lost))
    demand = args.robots * args.fps
    max_load = max(loads(degraded, survivors))
    return {
        'config': vars(args),
        'all_up': dict(_balance(full, slots), assign_ms=round(full_ms, 1)),
        'server_lost': dict(_balance(degraded, survivors), assign_ms=round(degraded_ms, 1),
                            orphans=orphans, moved=moved(full, degraded),
                            moved_not_orphans=moved(full, degraded) - orphans),
        'server_back': dict(_balance(healed, slots), assign_ms=round(healed_ms, 1),
                            moved=moved(degraded, healed), same_as_before=healed == full),
        'capacity': {
            'demand_masks_per_s': demand,
            'supply_all_up': args.gpu_masks_per_s * len(slots),
            'supply_one_server_lost': args.gpu_masks_per_s * len(survivors),
            'fps_per_robot_worst_gpu_after_loss': round(
                min(args.fps, args.gpu_masks_per_s / max_load), 2)},
        'uplink_mbit_s_per_server': round(
            args.robots / args.servers * args.fps * args.frame_bytes * 8 / 1e6, 1),
        'failover_s': {'detect': args.lease_s, 'reassign': round(degraded_ms / 1e3, 3),
                       'hold_down': args.hold_down_s,
                       'next_key_frame': round(1.0 / args.fps, 3),
                       'total': round(args.lease_s + degraded_ms / 1e3 + args.hold_down_s
                                      + 1.0 / args.fps, 2),
                       'target': 5.0},
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Run the simulation and print (and write) the report."""
    report = simulate(parse_args(argv))
    print(json.dumps(report, indent=1))
    if report['config']['json']:
        with open(report['config']['json'], 'w') as f:
            json.dump(report, f, indent=1)
    return 0
