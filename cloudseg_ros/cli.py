"""The `cloudseg` command: one subcommand per tool, each a module with `main(argv) -> int`.

Subcommand modules are imported only when used, so `cloudseg bench-edge` on a robot never
imports torch.
"""
import importlib
import sys
from typing import List, Optional

# subcommand -> (module, one-line help)
COMMANDS = {
    'demo': ('cloudseg_ros.tools.demo', 'run replay -> edge -> cloud -> masks over DDS'),
    'bench-edge': ('cloudseg_ros.tools.bench_edge', 'cost of select + downsample + encode'),
    'bench-cloud': ('cloudseg_ros.tools.bench_cloud', 'speed of decode, SR, segmentation'),
    'train-seg': ('cloudseg_ros.training.train_seg', 'train the ICNet-style segmentation net'),
    'train-sr': ('cloudseg_ros.training.train_sr', 'train base SR (CARN) on LR/HR pairs'),
    'finetune-sr': ('cloudseg_ros.training.finetune_sr', 'analytics-aware SR fine-tuning'),
    'adapt': ('cloudseg_ros.training.adapt',
              'adapt aware SR and the segmentation net to a new camera, no labels'),
    'eval': ('cloudseg_ros.training.evaluate', 'mIoU/PSNR/SSIM table (paper Table 1)'),
    'profile': ('cloudseg_ros.tools.profile', 'offline configuration profile, Pareto front'),
    'bench-stream': ('cloudseg_ros.tools.bench_stream', 'bandwidth vs accuracy (paper Fig. 5)'),
    'wan-test': ('cloudseg_ros.tools.wan_test', 'robot/cloud across a shaped veth link (root)'),
    'make-clip': ('cloudseg_ros.tools.make_clip', 'build the bundled demo clip from CamVid'),
    'fuzz': ('cloudseg_ros.tools.fuzz', 'seeded fuzzing of receiver, engine, controller'),
    'soak': ('cloudseg_ros.tools.soak', 'long run: RSS and latency drift per process'),
    'record': ('cloudseg_ros.tools.record', 'record a run to a rosbag2 MCAP file'),
    'report': ('cloudseg_ros.tools.report', 'summary plots of a recorded MCAP file'),
    'view': ('cloudseg_ros.tools.view', 'live Foxglove WebSocket view of robots'),
    'bench-fleet': ('cloudseg_ros.tools.bench_fleet',
                    'cloud node serving N synthetic robots over DDS'),
    'bench-outputs': ('cloudseg_ros.tools.bench_outputs',
                      'CPU cost of mask_color / PNG / mask messages per frame'),
    'bench-executor': ('cloudseg_ros.tools.bench_executor',
                       "executor's CPU per received frame, per executor variant"),
    'fleet-sim': ('cloudseg_ros.tools.fleet_sim',
                  'robot -> GPU assignment and failover at fleet size'),
    'pool-sim': ('cloudseg_ros.tools.pool_sim',
                 'several servers sharing a fleet: failover, no double masks'),
    'keys': ('cloudseg_ros.tools.keys', 'CA + server/robot certificates for the zenoh uplink'),
}


def _usage() -> str:
    lines = ['usage: cloudseg <command> [options]', '', 'commands:']
    lines += [f'  {name:<13} {help_text}' for name, (_, help_text) in COMMANDS.items()]
    lines.append('')
    lines.append("'cloudseg <command> --help' for a command's options")
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch `cloudseg <command> ...` to the command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"cloudseg: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    # A tool names the exceptions that mean bad input (a missing file, unusable weights): the
    # user gets the message, not a traceback. Any other exception is a bug and keeps its trace.
    try:
        return int(module.main(rest) or 0)
    except getattr(module, 'USER_ERRORS', ()) as exc:
        print(f'cloudseg {name}: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
