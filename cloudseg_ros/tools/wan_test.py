"""`cloudseg wan-test`: the whole loop over a real, shaped network link between two namespaces.

robot namespace (camera_replay -> edge, controller, monitor) --veth, tc tbf uplink--> cloud
namespace (cloud node). DDS runs over UDP only with unicast peers (config/fastdds_wan.xml), the
link drops multicast, so what is tested is what a WAN deployment does. The uplink steps through
--rates (default 8 -> 1 -> 4 Mbit/s), --phase-s each, while the monitor records every second;
the run then checks that the robot adapts (down fast, up again), that latency stays bounded and
that masks keep coming (tools/wan_report.py), prints PASS/FAIL with reasons and writes
wan_test.json and wan_test.png to --out.

The controller's profile is a ladder of JPEG configurations whose bitrates are measured on the
clip with the robot's own pipeline before the run (their accuracies are placeholders that only
order the ladder: this test is about the network, not accuracy). With --uplink zenoh the
robot-cloud hop is the zenoh uplink instead of DDS: keys made for the run (`cloudseg keys`, the
server's certificate for the cloud namespace's address), the robot dialling the cloud's zenoh
router over mutual TLS with its own certificate, DDS kept inside each namespace (another domain
on each side). Needs root and `ip netns`;
without them it prints 'skipped' and exits 0, so `make wan-test` never fails for lack of rights.
"""
import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from cloudseg_ros.core.edge_pipeline import EdgeConfig, EdgePipeline
from cloudseg_ros.core.profile import ProfileEntry, StreamConfig, save_profile
from cloudseg_ros.core.sources import SourceError, open_source
from cloudseg_ros.core.zenoh_fleet import DEFAULT_PORT, robot_name
from cloudseg_ros.paths import package_file
from cloudseg_ros.tools import wan_report as report
from cloudseg_ros.tools.processes import LoggedProcess, param_text
from cloudseg_ros.tools.wan_link import (CLOUD_IP, ROBOT_IP, LinkError, WanLink,
                                         privileges_problem, remove_stale_namespaces)

NODES = 'cloudseg_ros.nodes.'
MONITOR = 'cloudseg_ros.tools.wan_monitor'
NAMESPACE = '/robot1'
CAMERA_HZ = 15.0
# The ladder: JPEG at these scales (the tiny networks, like the shipped weights, have SR for x2
# and x4) and qualities, measured on the clip, then thinned to a chain whose steps are at most
# LADDER_MAX_STEP. The controller cannot measure more capacity than the robot sends: its
# estimate may run ahead of the delivery rate by the estimator's probe_factor (2.0), of which
# the policy uses headroom (0.8) x (1 - upgrade_margin) (0.9), so an upgrade can reach ~1.44x
# the current bitrate. With the brief's 6-entry ladder (steps of 1.6-2.3x) it stayed at
# 460 kbit/s for a whole 8 Mbit/s phase; 1.3 leaves room for the frame-size noise of the clip.
LADDER_SCALES = (4, 2, 1)
LADDER_SR_SCALES = tuple(sorted(s for s in LADDER_SCALES if s != 1))  # need SR weights
LADDER_QUALITIES = (50, 60, 70, 80, 85, 90, 95)
LADDER_MAX_STEP = 1.3
LADDER_TOP_FRACTION = 0.8  # no entry above this fraction of the fastest phase: it never fits
SKIP_TEXT = 'wan-test skipped: needs root and network namespaces'
# How the edge words a refusal at the TLS handshake (core/tls_probe.py).
TLS_REFUSALS = ('certificate was refused', "refused this robot's certificate",
                'TLS handshake with')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg wan-test', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', default=package_file('data', 'demo', 'camvid_val_15fps.mp4'),
                        help='clip the robot streams (looped) and the ladder is measured on')
    parser.add_argument('--rates', type=int, nargs='+', default=[8000, 1000, 4000],
                        help='uplink rate of each phase, kbit/s')
    parser.add_argument('--phase-s', type=float, default=25.0, help='seconds per phase')
    parser.add_argument('--outages', type=float, nargs='*', default=[],
                        help='after the rate phases, cut the link both ways for each of these '
                             'seconds (1-30 in the test), each followed by --recovery-s at the '
                             'last rate')
    parser.add_argument('--recovery-s', type=float, default=20.0,
                        help='seconds at the last rate after each outage')
    parser.add_argument('--warmup-s', type=float, default=10.0,
                        help='extra seconds of the first phase: the controller starts from its '
                             'initial estimate and climbs one entry per ~3-4 s')
    parser.add_argument('--models', default='',
                        help="weights folder; '' = the package's models/ on CUDA (if it has "
                             'segmentation and SR x2/x4 weights), tiny random-init networks on '
                             'CPU, where the real SR (0.5-1.3 s/frame) would be the bottleneck')
    parser.add_argument('--device', default='cpu', help="cloud torch device ('cpu', 'cuda')")
    parser.add_argument('--sr-variant', default='aware', choices=('aware', 'base', 'bilinear'))
    parser.add_argument('--startup-timeout-s', type=float, default=60.0,
                        help='longest wait for the first mask over the link')
    parser.add_argument('--down-limit-s', type=float, default=report.Limits.down_limit_s)
    parser.add_argument('--up-limit-s', type=float, default=report.Limits.up_limit_s)
    parser.add_argument('--latency-p95-ms', type=float,
                        default=report.Limits.latency_p95_limit_ms)
    parser.add_argument('--uplink', choices=('dds', 'zenoh'), default='dds',
                        help='robot-cloud hop: DDS with unicast peers, or zenoh with mutual TLS '
                             '(keys made for the run)')
    parser.add_argument('--out', default=os.path.join('out', 'wan'))
    args = parser.parse_args(argv)
    if len(args.rates) < 2 or min(args.rates) <= 0:
        parser.error('--rates needs at least two positive rates')
    if any(not 0 < seconds <= 600 for seconds in args.outages):
        parser.error('--outages: seconds in (0, 600]')
    args.out = os.path.abspath(args.out)  # the nodes get paths under it
    return args


# ----------------------------------------------------------------------------- the profile
def read_clip(path: str) -> list:
    """Every frame of the clip (RGB), once."""
    source = open_source(path, loop=False)
    frames = []
    while True:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    source.close()
    if not frames:
        raise SourceError(f"no frames in '{path}'")
    return frames


def measure_configs(frames: list) -> List[Tuple[float, StreamConfig]]:
    """Measure (kbit/s, config) of every LADDER_SCALES x LADDER_QUALITIES configuration.

    With the robot's own pipeline (selector included) over the clip at the camera rate.
    """
    measured = []
    for scale in LADDER_SCALES:
        for quality in LADDER_QUALITIES:
            config = StreamConfig(scale, 'jpeg', quality, CAMERA_HZ, EdgeConfig.useful_threshold,
                                  EdgeConfig.key_threshold)
            pipeline = EdgePipeline(EdgeConfig(**config.edge_parameters()))
            sent = [pipeline.process(frame, i / CAMERA_HZ) for i, frame in enumerate(frames)]
            total_bytes = sum(len(frame.data) for frame in sent if frame is not None)
            measured.append((total_bytes * 8e-3 / (len(frames) / CAMERA_HZ), config))
    return measured


def pick_ladder(measured: Sequence[Tuple[float, StreamConfig]],
                top_kbps: float) -> List[ProfileEntry]:
    """Chain the measured configurations into the controller's ladder, up to `top_kbps`.

    The cheapest first, then repeatedly the dearest within LADDER_MAX_STEP of the last one (the
    next one up where the grid has a wider gap).

    The accuracies only order the ladder (cheapest = least accurate) so that every entry is on
    the Pareto front; they are placeholders, not measurements.
    """
    ordered = sorted((m for m in measured if m[0] <= top_kbps), key=lambda m: m[0])
    chain = [ordered[0]]
    while True:
        last_kbps = chain[-1][0]
        above = [m for m in ordered if m[0] > 1.05 * last_kbps]  # 5 %: not a real step
        if not above:
            break
        within = [m for m in above if m[0] <= LADDER_MAX_STEP * last_kbps]
        chain.append(within[-1] if within else above[0])
    step = 0.45 / max(1, len(chain) - 1)
    return [ProfileEntry(config, round(kbps, 1), round(0.5 + step * rank, 3))
            for rank, (kbps, config) in enumerate(chain)]


def _tiny_models(folder: str) -> str:
    """Random-init ICNet and CARN-M (aware and base) for the ladder's scales: fast on CPU."""
    from cloudseg_ros.inference import model_files
    return model_files.write_tiny_models(folder, scales=LADDER_SR_SCALES,
                                         variants=('aware', 'base'))


def resolve_models(args: argparse.Namespace, work_dir: str) -> Tuple[str, str]:
    """(weights folder, description): --models, the package's models/ on CUDA, else tiny ones.

    On this kind of CPU the trained CARN-M takes 0.5-1.3 s per frame (x4, x2): the cloud, not
    the link, would limit the stream, and the test would say nothing about the network.
    """
    from cloudseg_ros.inference import model_files
    if args.models:
        return args.models, f'{args.models} ({args.sr_variant})'
    if not args.device.startswith('cuda'):
        return _tiny_models(work_dir), 'tiny random-init networks (CPU)'
    shipped = model_files.default_models_dir()
    have_sr = (args.sr_variant == 'bilinear'
               or set(model_files.sr_checkpoints(shipped, args.sr_variant))
               >= set(LADDER_SR_SCALES))
    if os.path.isfile(model_files.seg_checkpoint(shipped)) and have_sr:
        return shipped, f'{shipped} ({args.sr_variant})'
    wanted = '/'.join(f'x{s}' for s in LADDER_SR_SCALES)
    return _tiny_models(work_dir), f'tiny random-init networks (no trained SR {wanted} found)'


# --------------------------------------------------------------------------- the processes
def ros_args(params: Dict, namespace: str = NAMESPACE) -> List[str]:
    """`--ros-args -p name:=value ... -r __ns:=namespace` for a node's command line."""
    args = ['--ros-args', '-r', f'__ns:={namespace}']
    for name, value in params.items():
        args += ['-p', f'{name}:={param_text(value)}']
    return args


def dds_env(peer_ip: str, domain_id: int, log_dir: str) -> Dict[str, str]:
    """Environment of one side: the unicast-peer Fast DDS profile, UDP only, subnet discovery.

    Everything that would override the profile's discovery (localhost-only, static peers, a
    discovery server) is removed; the conftest of test/ros sets some of these. Fast DDS 3 reads
    only FASTDDS_DEFAULT_PROFILES_FILE; the old FASTRTPS_ name (Humble's Fast DDS 2.6) is
    dropped here because rmw_fastrtps on Kilted warns about it in every node's log.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS', 'ROS_DISCOVERY_SERVER',
                          'FASTRTPS_DEFAULT_PROFILES_FILE')}
    profile = package_file('config', 'fastdds_wan.xml')
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp', FASTDDS_DEFAULT_PROFILES_FILE=profile,
               CLOUDSEG_DDS_PEER=peer_ip,
               ROS_LOG_DIR=log_dir, PYTHONUNBUFFERED='1')
    return env


def local_dds_env(domain_id: int, log_dir: str) -> Dict[str, str]:
    """Environment of one side when zenoh carries the uplink: DDS stays on the namespace's host.

    Discovery only on the namespace's loopback, the default Fast DDS transports, and a domain
    of the side's own: nothing can cross the link over DDS.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS', 'ROS_DISCOVERY_SERVER',
                          'FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE',
                          'CLOUDSEG_DDS_PEER')}
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp', ROS_LOG_DIR=log_dir, PYTHONUNBUFFERED='1')
    return env


def make_uplink_keys(work_dir: str) -> str:
    """`cloudseg keys` for the run: the fleet CA, robot1 and the server at CLOUD_IP."""
    from cloudseg_ros.tools.keys import make_keys  # needs cryptography: only for zenoh
    keys_dir = os.path.join(work_dir, 'keys')
    make_keys(keys_dir, [robot_name(NAMESPACE)], [CLOUD_IP])
    return keys_dir


def side_settings(uplink: str, keys_dir: str, log_dir: str) -> Tuple[Dict, Dict, Dict, Dict]:
    """(cloud env, robot env, cloud uplink parameters, edge uplink parameters) of the run."""
    domain_id = 1 + os.getpid() % 100  # the namespaces isolate runs anyway
    if uplink == 'dds':
        return dds_env(ROBOT_IP, domain_id, log_dir), dds_env(CLOUD_IP, domain_id, log_dir), {}, {}
    endpoint = f'tls/{CLOUD_IP}:{DEFAULT_PORT}'
    params = {'uplink_transport': 'zenoh', 'zenoh_keys_dir': keys_dir}
    return (local_dds_env(domain_id, log_dir), local_dds_env(1 + (domain_id + 50) % 100, log_dir),
            dict(params, zenoh_endpoint=f'tls/0.0.0.0:{DEFAULT_PORT}'),
            dict(params, zenoh_endpoint=endpoint))


def ns_process(prefix: List[str], module: str, args: List[str], log_dir: str,
               env: Dict[str, str]) -> LoggedProcess:
    """One module (`python -m`) in its own process inside a network namespace.

    `ip netns exec` exec()s the command, so SIGINT from `stop()` reaches Python directly.
    """
    return LoggedProcess(prefix + [sys.executable, '-m', module, *args], log_dir,
                         module.rsplit('.', 1)[-1], base_env=env, own_group=False)


def start_processes(link: WanLink, args: argparse.Namespace, profile_path: str,
                    models_dir: str, monitor_path: str, log_dir: str,
                    keys_dir: str = '') -> List[LoggedProcess]:
    """Cloud in the cloud namespace; monitor, controller, edge and camera in the robot's."""
    cloud_env, robot_env, cloud_uplink, edge_uplink = side_settings(args.uplink, keys_dir,
                                                                    log_dir)
    cloud_env['OMP_NUM_THREADS'] = '1'  # one core stays with the robot side (one host here)
    cloud, robot = link.exec_prefix('cloud'), link.exec_prefix('robot')
    started = []
    # The cloud first (torch import and model loading take longest), the camera last.
    for prefix, module, argv, env in (
            (cloud, NODES + 'cloud_node', ros_args(
                {'robot_namespaces': [NAMESPACE], 'models_dir': models_dir, 'device': args.device,
                 'sr_variant': args.sr_variant, 'publish_color': False, **cloud_uplink}, '/'),
             cloud_env),
            (robot, MONITOR, ['--namespace', NAMESPACE, '--out', monitor_path, '--trace',
                              os.path.join(os.path.dirname(monitor_path), 'trace.jsonl')],
             robot_env),
            (robot, NODES + 'edge_node', ros_args({'publish_compressed': False, **edge_uplink}),
             robot_env),
            (robot, NODES + 'controller_node', ros_args({'profile': profile_path}), robot_env),
            (robot, NODES + 'camera_replay_node', ros_args(
                {'source': os.path.abspath(args.input), 'rate_hz': CAMERA_HZ, 'loop': True}),
             robot_env)):
        started.append(ns_process(prefix, module, argv, log_dir, env))
    return started


# ------------------------------------------------------------------------------- the run
class MonitorFile:
    """Follows the monitor's JSON-lines file while it is being written."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: List[Dict] = []
        self._offset = 0

    def poll(self) -> None:
        """Read the complete lines added since the last call."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as stream:
            stream.seek(self._offset)
            chunk = stream.read()
        complete = chunk[:chunk.rfind('\n') + 1]
        self._offset += len(complete.encode())
        self.records += [json.loads(line) for line in complete.splitlines() if line.strip()]


class RunFailed(RuntimeError):
    """The run cannot go on (a node died, nothing came back); the message says why."""


def check_alive(processes: Sequence[LoggedProcess]) -> None:
    """Raise RunFailed with the last output of a process that exited."""
    for process in processes:
        if not process.alive():
            raise RunFailed(f'{process.name} exited ({process.proc.returncode}):\n'
                            f'{process.log()[-3000:]}')


def wait_for_first_mask(monitor: MonitorFile, processes: Sequence[LoggedProcess],
                        timeout_s: float) -> float:
    """Seconds until the first mask came back over the link (discovery + model loading)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        check_alive(processes)
        monitor.poll()
        if any(record['masks'] for record in monitor.records):
            return time.monotonic() - start
        time.sleep(0.2)
    raise RunFailed(f'no mask came back within {timeout_s:.0f} s: discovery across the '
                    'namespaces or the cloud failed (see the logs)')


def run_phases(link: WanLink, args: argparse.Namespace, monitor: MonitorFile,
               processes: Sequence[LoggedProcess], run: Dict) -> None:
    """Step the uplink through `rates`, then each outage and its recovery, printing each second.

    Appends to run['phases'] (and the tbf counters at each phase's end to run['uplink_tbf'])
    as it goes, so a run that fails half-way still reports what it did.
    """
    phases: List[report.Phase] = run['phases']
    printed = 0
    print(report.TABLE_HEADER, flush=True)
    steps = [(rate, args.phase_s + (0.0 if index else args.warmup_s))
             for index, rate in enumerate(args.rates)]
    for seconds in args.outages:
        steps += [(0, seconds), (args.rates[-1], args.recovery_s)]
    for rate, length_s in steps:
        if phases and rate == 0:
            link.set_outage(True)
        elif phases and phases[-1].rate_kbit == 0:
            link.set_outage(False)
        elif phases:
            link.set_rate_kbit(rate)
        start = time.time()
        phases.append(report.Phase(rate, start, start + length_s))
        what = 'link cut' if rate == 0 else f'uplink {rate} kbit/s'
        print(f'--- {what} for {length_s:.0f} s', flush=True)
        while time.time() < start + length_s:
            time.sleep(0.2)
            check_alive(processes)
            monitor.poll()
            printed = _print_new_rows(monitor, phases, printed)
        run['uplink_tbf'].append(dict(link.uplink_counters(), rate_kbit=rate))


def _print_new_rows(monitor: MonitorFile, phases: Sequence[report.Phase], printed: int) -> int:
    """Print the rows of seconds that have ended and been written; return the new count."""
    merged = report.merge_records(monitor.records)
    t0 = int(phases[0].start_s)
    done = [t for t in merged if t >= t0]
    last = max(done) if done else t0 - 1
    for t in range(t0 + printed, last):  # the newest second may still get a late event
        row = report.make_row(t, merged.get(t, {}), report.capacity_at(phases, t + 0.5),
                              phases[0].start_s)
        print(report.format_row(row), flush=True)
        printed += 1
    return printed


def profile_errors(processes: Sequence[LoggedProcess]) -> List[str]:
    """Name the processes whose Fast DDS profile failed to load (they fell back to multicast)."""
    return [p.name for p in processes if 'XMLPARSER' in p.log()]


def zenoh_link_check(processes: Sequence[LoggedProcess]) -> report.Check:
    """Whether the edge's zenoh link to the cloud's router came up (mutual TLS, its own keys).

    Only refusals at the TLS handshake count against it (a certificate refused, a failed
    handshake): 'cannot reach' while the cloud starts or the link is cut, and a session not yet
    reopened after an outage, are expected.
    """
    logs = {p.name: p.log() for p in processes}
    edge, cloud = logs.get('edge_node', ''), logs.get('cloud_node', '')
    endpoint = f'tls/{CLOUD_IP}:{DEFAULT_PORT}'
    up = f'zenoh link to {endpoint} up' in edge and 'uplink: zenoh router' in cloud
    refusals = sorted({line.split(': ', 2)[-1] for line in edge.splitlines()
                       if 'no zenoh link' in line
                       and any(words in line for words in TLS_REFUSALS)})
    detail = (f"edge as {robot_name(NAMESPACE)} -> cloud router {endpoint}: "
              f"{'link up' if up else 'no link'}" + (f'; refused: {refusals}' if refusals else ''))
    return report.Check('zenoh mTLS link', up and not refusals, detail)


# ---------------------------------------------------------------------------- the report
def write_report(args: argparse.Namespace, run: Dict, monitor: MonitorFile,
                 ladder: Sequence[ProfileEntry]) -> bool:
    """Print checks and per-phase figures, write JSON and PNG; return whether all passed."""
    phases: List[report.Phase] = run['phases']
    kbps = {entry.name: entry.kbps for entry in ladder}
    merged = report.merge_records(monitor.records)
    limits = report.Limits(down_limit_s=args.down_limit_s, up_limit_s=args.up_limit_s,
                           latency_p95_limit_ms=args.latency_p95_ms)
    checks = list(run['failures'])
    if phases:
        tbf = run['uplink_tbf'][-1].get('bytes') if run['uplink_tbf'] else None
        checks = (report.evaluate(merged, phases, kbps, limits)
                  + [report.check_link_carried(merged, tbf)] + checks)
    summaries = report.summarize_phases(merged, phases, run['uplink_tbf'], limits)
    for summary in summaries:
        print(report.format_summary(summary))
    print(f"first mask {run.get('first_mask_s', '-')} s after start; multicast packets dropped "
          f"on the link (discovery did without): {run.get('multicast_dropped', {})}")
    passed = bool(checks) and all(check.passed for check in checks)
    for check in checks:
        print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    print(f"wan-test {'PASS' if passed else 'FAIL'}", flush=True)
    rows = report.second_rows(merged, phases) if phases else []
    switches = report.all_switches(merged)
    document = {'result': 'PASS' if passed else 'FAIL', 'checks': report.checks_json(checks),
                'phases': summaries, 'switches': switches, 'seconds': rows,
                'ladder': [{'name': e.name, 'kbps': e.kbps} for e in ladder],
                'settings': {k: v for k, v in run.items() if k not in ('phases', 'failures')}}
    with open(os.path.join(args.out, 'wan_test.json'), 'w') as stream:
        json.dump(document, stream, indent=1)
    if rows:
        report.plot(rows, switches, kbps, phases[0].start_s,
                    os.path.join(args.out, 'wan_test.png'),
                    'uplink ' + ' -> '.join(f'{p.rate_kbit}' for p in phases) + ' kbit/s')
    return passed


# ------------------------------------------------------------------------------------ main
def _raise_interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Let SIGTERM (make or CI stopping us) unwind through `finally`: namespaces get removed."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: signals are not ours to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stream_over_link(args: argparse.Namespace, link: WanLink, profile_path: str,
                     models_dir: str, keys_dir: str = '') -> Tuple[Dict, MonitorFile]:
    """Start the nodes, run the phases, stop the nodes; failures are returned as checks."""
    log_dir = os.path.join(args.out, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    monitor = MonitorFile(os.path.join(args.out, 'monitor.jsonl'))
    if os.path.exists(monitor.path):
        os.remove(monitor.path)
    run: Dict = {'phases': [], 'failures': [], 'uplink_tbf': []}
    processes: List[LoggedProcess] = []
    try:
        processes = start_processes(link, args, profile_path, models_dir, monitor.path, log_dir,
                                    keys_dir)
        print(f'waiting for the first mask over the link (<= {args.startup_timeout_s:.0f} s)',
              flush=True)
        run['first_mask_s'] = round(wait_for_first_mask(monitor, processes,
                                                        args.startup_timeout_s), 1)
        print(f"first mask after {run['first_mask_s']} s", flush=True)
        run_phases(link, args, monitor, processes, run)
    except RunFailed as err:
        run['failures'].append(report.Check('run', False, str(err)))
    finally:
        run['multicast_dropped'] = link.multicast_drops()
        for process in reversed(processes):
            process.stop()
    if args.uplink == 'zenoh':
        run['failures'].append(zenoh_link_check(processes))
    broken = profile_errors(processes)
    if broken:
        run['failures'].append(report.Check('Fast DDS profile', False,
                                            f'config/fastdds_wan.xml did not load in {broken}'))
    monitor.poll()
    return run, monitor


def prepare_profile(args: argparse.Namespace) -> List[ProfileEntry]:
    """Measure the ladder on the clip, print it and save it as the controller's profile."""
    ladder = pick_ladder(measure_configs(read_clip(args.input)),
                         LADDER_TOP_FRACTION * max(args.rates))
    print(f"profile ladder, measured on '{args.input}' at {CAMERA_HZ:g} Hz:")
    for entry in ladder:
        print(f'  {entry.name:<32} {entry.kbps:7.0f} kbit/s')
    save_profile(os.path.join(args.out, 'profile.yaml'), ladder,
                 meta={'clip': os.path.abspath(args.input), 'source': 'cloudseg wan-test',
                       'accuracy': 'placeholder: orders the ladder only'})
    return ladder


def run_on_link(args: argparse.Namespace) -> Optional[Tuple[Dict, MonitorFile]]:
    """Build the link, stream over it, tear it down; None (said why) if it cannot be built."""
    with tempfile.TemporaryDirectory(prefix='cloudseg_wan_') as work:
        models_dir, models_text = resolve_models(args, work)
        keys_dir = make_uplink_keys(work) if args.uplink == 'zenoh' else ''
        for name in remove_stale_namespaces():
            print(f'removed namespace {name} left by a killed run')
        link = WanLink(str(os.getpid()), args.rates[0])
        try:
            link.up()
        except LinkError as err:
            print(f'{SKIP_TEXT} (building the link failed: {err})', flush=True)
            return None
        print(f'link: {link.robot_ns} {ROBOT_IP} --tbf--> {link.cloud_ns} {CLOUD_IP}; '
              f'uplink over {args.uplink}; cloud models: {models_text}', flush=True)
        try:
            run, monitor = stream_over_link(args, link, os.path.join(args.out, 'profile.yaml'),
                                            models_dir, keys_dir)
        finally:
            link.down()
    run.update(uplink=args.uplink, models=models_text, rates_kbit=list(args.rates),
               phase_s=args.phase_s, warmup_s=args.warmup_s, outages_s=list(args.outages),
               recovery_s=args.recovery_s)
    return run, monitor


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the WAN test; 0 on PASS or skip, 1 on FAIL."""
    args = parse_args(argv)
    problem = privileges_problem()
    if problem:
        print(f'{SKIP_TEXT} ({problem})', flush=True)
        return 0
    os.makedirs(args.out, exist_ok=True)
    try:
        ladder = prepare_profile(args)
    except SourceError as err:
        print(f'wan-test: {err}', file=sys.stderr)
        return 1
    try:
        with sigterm_as_interrupt():
            outcome = run_on_link(args)
    except KeyboardInterrupt:
        print('wan-test interrupted (namespaces and processes removed)', file=sys.stderr)
        return 130
    if outcome is None:
        return 0  # skipped
    run, monitor = outcome
    return 0 if write_report(args, run, monitor, ladder) else 1


if __name__ == '__main__':
    sys.exit(main())
