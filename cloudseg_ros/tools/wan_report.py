"""Judge and report a `cloudseg wan-test` run: per-second table, checks, JSON and PNG.

Input: the monitor's per-second records (tools/wan_monitor.py), the capacity phases the link went
through, and the profile ladder ({entry name: kbps}). No ROS, no network: unit-testable.

Checks, per capacity change and per phase:

- down: after a capacity drop the robot's sent bitrate is under the new capacity within
  `down_limit_s` (and stays there 3 s), and the controller switched to a cheaper entry;
- up: after a rise the controller switches to a more expensive entry within `up_limit_s`;
- latency: in the last `latency_window_s` of every phase (the last half of shorter phases),
  p95 of the end-to-end latency is under `latency_p95_limit_ms` and its trend under
  `latency_slope_limit_ms_per_s` (bounded and not growing);
- masks: every phase gets masks, with no gap longer than `mask_gap_limit_s`.
- outage (a phase of rate 0: the link cut both ways), judged on the phase after it: masks come
  back within `outage_first_mask_limit_s`; from `outage_settle_s` after the restore on, latency
  p95 is back to normal: at most 1.5x (or 300 ms above) the normal p95, the larger of the p95
  in the `latency_window_s` before the cut and in the judged tail of the recovery phase, which
  the judged part (settle time to tail) does not overlap (on
  this shared CPU the steady p95 moved between 330 and 970 ms from phase to phase, so one
  window alone is not "normal"); and no backlog burst: no mask after the restore is more than
  `backlog_margin_ms` older than that normal p95 (nothing held across the outage arrives late).
"""
import math
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

SUSTAIN_S = 3  # seconds the sent bitrate must stay under the capacity to count as adapted


@dataclass
class Phase:
    """One capacity step of the uplink, in unix seconds."""

    rate_kbit: int
    start_s: float
    end_s: float


@dataclass
class Limits:
    """Pass/fail thresholds (module docstring)."""

    down_limit_s: float = 5.0
    up_limit_s: float = 15.0
    latency_window_s: float = 10.0
    latency_p95_limit_ms: float = 2000.0
    latency_slope_limit_ms_per_s: float = 50.0
    mask_gap_limit_s: int = 3
    outage_settle_s: float = 2.0
    outage_first_mask_limit_s: float = 10.0
    backlog_margin_ms: float = 1000.0


@dataclass
class Check:
    """One verdict with the numbers behind it."""

    name: str
    passed: bool
    detail: str
    value: Optional[float] = None  # the headline number (seconds, ms), None if not measured


def merge_records(records: Iterable[Dict]) -> Dict[int, Dict]:
    """{unix second: record}; a second written twice (a late event) is summed into one."""
    merged: Dict[int, Dict] = {}
    for record in records:
        t = int(record['t'])
        if t not in merged:
            merged[t] = dict(record, latency_ms=list(record['latency_ms']),
                             switches=list(record['switches']))
            continue
        into = merged[t]
        for key in ('sent_bytes', 'sent_frames', 'rx_bytes', 'rx_frames', 'masks'):
            into[key] += record[key]
        into['latency_ms'] += record['latency_ms']
        into['switches'] += record['switches']
        into['config'] = record['config'] or into['config']
        if record.get('estimate_kbps') is not None:
            into['estimate_kbps'] = record['estimate_kbps']
    return merged


def capacity_at(phases: Sequence[Phase], t_s: float) -> Optional[int]:
    """Uplink rate in kbit/s at unix time `t_s`, None outside the phases."""
    for phase in phases:
        if phase.start_s <= t_s < phase.end_s:
            return phase.rate_kbit
    return None


def make_row(t: int, record: Dict, capacity_kbps: Optional[int], t0: float) -> Dict:
    """Build the table row of unix second `t` (`t_rel_s` counts from the second of `t0`)."""
    latencies = record.get('latency_ms', [])
    return {
        't': t, 't_rel_s': t - int(t0), 'capacity_kbps': capacity_kbps,
        'sent_kbps': round(record.get('sent_bytes', 0) * 8e-3, 1),
        'rx_kbps': round(record.get('rx_bytes', 0) * 8e-3, 1),
        'estimate_kbps': record.get('estimate_kbps'), 'config': record.get('config', ''),
        'masks': record.get('masks', 0),
        'latency_p50_ms': float(np.median(latencies)) if latencies else None,
        'latency_max_ms': float(max(latencies)) if latencies else None,
    }


def second_rows(merged: Dict[int, Dict], phases: Sequence[Phase]) -> List[Dict]:
    """One row per whole second of the phases: capacity, bitrates, estimate, masks, latency."""
    t0 = phases[0].start_s
    return [make_row(t, merged.get(t, {}), capacity_at(phases, t + 0.5), t0)
            for t in range(int(math.floor(t0)), int(math.ceil(phases[-1].end_s)))]


def all_switches(merged: Dict[int, Dict]) -> List[Dict]:
    """Every configuration change the monitor saw, in time order."""
    return sorted((s for t in sorted(merged) for s in merged[t]['switches']),
                  key=lambda s: s['t'])


def config_at(switches: Sequence[Dict], t_s: float) -> str:
    """Return the entry in force at `t_s` ('' before the first decision)."""
    name = ''
    for switch in switches:
        if switch['t'] > t_s:
            break
        name = switch['config']
    return name


def time_to_fit(rows: Sequence[Dict], change_s: float, end_s: float,
                capacity_kbps: float) -> Optional[float]:
    """Return the seconds it took the sent bitrate to fit `capacity_kbps` after `change_s`.

    Counted to the end of the first second from which it stays under the capacity for
    SUSTAIN_S seconds (or until `end_s`); None if it never does.
    """
    window = [r for r in rows if r['t'] + 1 > change_s and r['t'] < end_s]
    for index, row in enumerate(window):
        following = window[index:index + SUSTAIN_S]
        if all(r['sent_kbps'] <= capacity_kbps for r in following):
            return max(0.0, row['t'] + 1 - change_s)
    return None


def first_switch(switches: Sequence[Dict], ladder: Dict[str, float], change_s: float,
                 end_s: float, cheaper: bool) -> Tuple[Optional[float], str, str]:
    """(delay s, from, to) of the first switch after `change_s` to a cheaper (or dearer) entry."""
    before = config_at(switches, change_s)
    reference = ladder.get(before, math.nan)
    for switch in switches:
        if not change_s < switch['t'] < end_s:
            continue
        kbps = ladder.get(switch['config'], math.nan)
        if (kbps < reference) if cheaper else (kbps > reference):
            return switch['t'] - change_s, before, switch['config']
    return None, before, ''


def sent_before(rows: Sequence[Dict], change_s: float, seconds: int = 3) -> Optional[float]:
    """Mean sent kbit/s over the whole `seconds` before `change_s`, None without data."""
    before = [r['sent_kbps'] for r in rows
              if change_s - seconds <= r['t'] and r['t'] + 1 <= change_s]
    return float(np.mean(before)) if before else None


def check_down(rows, switches, ladder, phase: Phase, limits: Limits) -> List[Check]:
    """After a drop: sent bitrate under the new capacity in time, and a cheaper entry chosen.

    A robot that sent no more than the new capacity in the 3 s before the drop or the first 2 s
    after it did not exercise the drop: that fails too (the controller had not climbed), rather
    than passing without having been tested.
    """
    label = f'down to {phase.rate_kbit} kbit/s'
    before = sent_before(rows, phase.start_s)
    after = [r['sent_kbps'] for r in rows if phase.start_s <= r['t'] + 1 <= phase.start_s + 2]
    peak = max([before or 0.0] + after)
    if peak <= phase.rate_kbit:
        return [Check(f'{label}: exercised', False,
                      f'the robot sent at most {peak:.0f} kbit/s around the drop: never above '
                      'the new capacity, so the drop was not tested')]
    fit_s = time_to_fit(rows, phase.start_s, phase.end_s, phase.rate_kbit)
    fitted = fit_s is not None and fit_s <= limits.down_limit_s
    fit_text = 'never' if fit_s is None else f'after {fit_s:.1f} s'
    checks = [Check(f'{label}: sent <= capacity', fitted,
                    f'{peak:.0f} kbit/s at the drop; under {phase.rate_kbit} kbit/s (for '
                    f'{SUSTAIN_S} s) {fit_text} (limit {limits.down_limit_s:.0f} s)', fit_s)]
    delay, old, new = first_switch(switches, ladder, phase.start_s, phase.end_s, True)
    if delay is None:
        checks.append(Check(f'{label}: cheaper entry', False,
                            f'no switch below {old or "?"} in the phase'))
    else:
        checks.append(Check(f'{label}: cheaper entry', True,
                            f'{old} -> {new} after {delay:.1f} s', delay))
    return checks


def check_up(switches, ladder, phase: Phase, limits: Limits) -> Check:
    """After a rise: a more expensive entry within `up_limit_s`."""
    delay, before, after = first_switch(switches, ladder, phase.start_s, phase.end_s, False)
    label = f'up to {phase.rate_kbit} kbit/s: dearer entry'
    if delay is None:
        return Check(label, False, f'stayed at or below {before or "?"} for the whole phase '
                     f'({phase.end_s - phase.start_s:.0f} s)')
    return Check(label, delay <= limits.up_limit_s,
                 f'{before} -> {after} after {delay:.1f} s (limit {limits.up_limit_s:.0f} s)',
                 delay)


def latency_samples(merged: Dict[int, Dict], start_s: float, end_s: float
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """(second + 0.5, latency ms) of every mask in whole seconds within [start_s, end_s)."""
    times, values = [], []
    for t, record in merged.items():
        if start_s <= t and t + 1 <= end_s:
            times += [t + 0.5] * len(record['latency_ms'])
            values += record['latency_ms']
    return np.asarray(times, dtype=float), np.asarray(values, dtype=float)


def tail_window_s(phase: Phase, limits: Limits) -> float:
    """Seconds at the end of a phase that are judged: settled, after the change's transient."""
    return min(limits.latency_window_s, (phase.end_s - phase.start_s) / 2.0)


def check_latency(merged, phase: Phase, limits: Limits) -> Check:
    """p95 and trend of the latency in the tail of the phase."""
    window = tail_window_s(phase, limits)
    times, values = latency_samples(merged, phase.end_s - window, phase.end_s)
    label = f'latency at {phase.rate_kbit} kbit/s'
    if values.size < 3:
        return Check(label, False, f'only {values.size} masks in the last {window:.0f} s')
    p95 = float(np.percentile(values, 95))
    slope = float(np.polyfit(times, values, 1)[0]) if np.ptp(times) > 0 else 0.0
    passed = p95 < limits.latency_p95_limit_ms and slope < limits.latency_slope_limit_ms_per_s
    return Check(label, passed,
                 f'last {window:.0f} s: p50 {np.median(values):.0f} ms, p95 {p95:.0f} ms '
                 f'(limit {limits.latency_p95_limit_ms:.0f}), trend {slope:+.0f} ms/s '
                 f'(limit {limits.latency_slope_limit_ms_per_s:.0f})', p95)


def check_masks(rows, phase: Phase, limits: Limits) -> Check:
    """Masks arrive throughout the phase: count and longest gap in whole seconds."""
    inside = [r for r in rows if phase.start_s <= r['t'] and r['t'] + 1 <= phase.end_s]
    total = sum(r['masks'] for r in inside)
    gap = longest = 0
    for row in inside:
        gap = gap + 1 if row['masks'] == 0 else 0
        longest = max(longest, gap)
    seconds = max(1, len(inside))
    passed = total > 0 and longest <= limits.mask_gap_limit_s
    return Check(f'masks at {phase.rate_kbit} kbit/s', passed,
                 f'{total} masks ({total / seconds:.1f}/s), longest gap {longest} s '
                 f'(limit {limits.mask_gap_limit_s} s)', float(longest))


def _first_mask_after(merged: Dict[int, Dict], t_s: float, end_s: float) -> Optional[float]:
    """Seconds from t_s to the first whole second after it with a mask, None if none."""
    seconds = [t for t in sorted(merged) if t_s <= t < end_s and merged[t].get('masks')]
    return seconds[0] + 1 - t_s if seconds else None


def check_outage(merged, outage: Phase, after: Phase, limits: Limits) -> List[Check]:
    """Masks return, latency back to normal `outage_settle_s` after, no backlog burst."""
    label = f'after a {outage.end_s - outage.start_s:.0f} s outage'
    _, before = latency_samples(merged, outage.start_s - limits.latency_window_s,
                                outage.start_s)
    window = tail_window_s(after, limits)
    _, tail = latency_samples(merged, after.end_s - window, after.end_s)
    first = _first_mask_after(merged, outage.end_s, after.end_s)
    back = Check(f'masks back {label}', first is not None
                 and first <= limits.outage_first_mask_limit_s,
                 f'first mask {first if first is None else round(first, 1)} s after the restore '
                 f'(limit {limits.outage_first_mask_limit_s:.0f} s)', first)
    if before.size < 3 or tail.size < 3:
        return [back, Check(f'latency {label}', False,
                            f'{before.size} masks before the cut, {tail.size} in the tail after: '
                            'no normal to compare with')]
    normal = float(max(np.percentile(before, 95), np.percentile(tail, 95)))
    bound = max(1.5 * normal, normal + 300.0)
    # Judged from the settle time up to the tail, so the two do not overlap.
    _, settled = latency_samples(merged, outage.end_s + limits.outage_settle_s,
                                 after.end_s - window)
    _, all_after = latency_samples(merged, outage.end_s, after.end_s)
    p95 = float(np.percentile(settled, 95)) if settled.size else float('nan')
    late = int(np.sum(all_after > normal + limits.backlog_margin_ms))
    return [back,
            Check(f'latency {label}', settled.size >= 3 and p95 <= bound,
                  f'p95 {p95:.0f} ms from {limits.outage_settle_s:.0f} s after the restore to '
                  f'the tail ({settled.size} masks), normal p95 {normal:.0f} ms, bound '
                  f'{bound:.0f} ms',
                  p95),
            Check(f'no backlog {label}', late == 0,
                  f'{late} of {all_after.size} masks after the restore more than '
                  f'{limits.backlog_margin_ms:.0f} ms older than the normal p95', float(late))]


def evaluate(merged: Dict[int, Dict], phases: Sequence[Phase], ladder: Dict[str, float],
             limits: Limits) -> List[Check]:
    """Every check of the module docstring, in time order."""
    rows = second_rows(merged, phases)
    switches = all_switches(merged)
    checks: List[Check] = []
    for index, phase in enumerate(phases):
        previous = phases[index - 1] if index > 0 else None
        if phase.rate_kbit == 0:
            continue  # an outage: judged with the phase after it
        if previous is not None and previous.rate_kbit == 0:
            checks += check_outage(merged, previous, phase, limits)
        elif previous is not None and phase.rate_kbit < previous.rate_kbit:
            checks += check_down(rows, switches, ladder, phase, limits)
        elif previous is not None and phase.rate_kbit > previous.rate_kbit:
            checks.append(check_up(switches, ladder, phase, limits))
        checks.append(check_latency(merged, phase, limits))
        if previous is not None and previous.rate_kbit == 0:
            # Gaps count once masks were due back (the 'masks back' check covers before).
            phase = Phase(phase.rate_kbit, phase.start_s + limits.outage_first_mask_limit_s,
                          phase.end_s)
        checks.append(check_masks(rows, phase, limits))
    return checks


def check_link_carried(merged: Dict[int, Dict], tbf_bytes: Optional[int]) -> Check:
    """Check that the frames the cloud received went through the shaped link (no bypass).

    tbf counts IP bytes (headers, discovery, acknowledgements too), the monitor payload bytes,
    so tbf must be at least the payload; far less means another path carried the frames.
    """
    payload = sum(record['rx_bytes'] for record in merged.values())
    if tbf_bytes is None or payload == 0:
        return Check('link carried the stream', False, 'no tbf counters or no frames received')
    ratio = tbf_bytes / payload
    return Check('link carried the stream', ratio >= 0.95,
                 f'tbf sent {tbf_bytes / 1e6:.1f} MB for {payload / 1e6:.1f} MB of frames that '
                 f'arrived ({ratio:.2f}x)', ratio)


def phase_summary(merged: Dict[int, Dict], rows: Sequence[Dict], phase: Phase,
                  limits: Limits) -> Dict:
    """Means over the phase and over its judged tail, latency percentiles over both."""
    tail_s = tail_window_s(phase, limits)
    inside = [r for r in rows if phase.start_s <= r['t'] and r['t'] + 1 <= phase.end_s]
    tail = [r for r in inside if r['t'] >= phase.end_s - tail_s]
    _, latencies = latency_samples(merged, phase.end_s - tail_s, phase.end_s)
    _, all_latencies = latency_samples(merged, phase.start_s, phase.end_s)

    def mean(key, chosen):
        return round(float(np.mean([r[key] for r in chosen])), 1) if chosen else None

    def pct(values, q):
        return round(float(np.percentile(values, q)), 1) if values.size else None

    return {'rate_kbit': phase.rate_kbit, 'seconds': len(inside), 'tail_s': tail_s,
            'sent_kbps_mean': mean('sent_kbps', inside), 'sent_kbps_tail': mean('sent_kbps', tail),
            'rx_kbps_mean': mean('rx_kbps', inside), 'rx_kbps_tail': mean('rx_kbps', tail),
            'masks_per_s': mean('masks', inside),
            'latency_ms_p50': pct(all_latencies, 50), 'latency_ms_p95': pct(all_latencies, 95),
            'latency_ms_max': pct(all_latencies, 100),
            'tail_latency_ms_p50': pct(latencies, 50), 'tail_latency_ms_p95': pct(latencies, 95),
            'configs': sorted({r['config'] for r in inside if r['config']}),
            'tail_config': tail[-1]['config'] if tail else ''}


def summarize_phases(merged: Dict[int, Dict], phases: Sequence[Phase],
                     tbf_counters: Sequence[Dict], limits: Limits) -> List[Dict]:
    """phase_summary of every phase plus what the uplink's tbf sent and dropped in it.

    `tbf_counters[i]` are tc's cumulative counters at the end of phase i (since the link was
    made, so the first phase's share includes the start-up).
    """
    if not phases:
        return []
    rows = second_rows(merged, phases)
    summaries = [phase_summary(merged, rows, phase, limits) for phase in phases]
    previous: Dict = {}
    for summary, phase, counters in zip(summaries, phases, tbf_counters):
        for key in ('bytes', 'drops'):
            summary[f'tbf_{key}'] = counters.get(key, 0) - previous.get(key, 0)
        summary['tbf_kbps'] = round(summary['tbf_bytes'] * 8e-3 / (phase.end_s - phase.start_s))
        previous = counters
    return summaries


def format_summary(summary: Dict) -> str:
    """One line per phase for the end of the run."""
    return (f"phase {summary['rate_kbit']:>5} kbit/s: sent {summary['sent_kbps_tail']} kbit/s "
            f"(last {summary['tail_s']:.0f} s), arrived {summary['rx_kbps_tail']}, masks "
            f"{summary['masks_per_s']}/s, latency p50/p95 {summary['latency_ms_p50']}/"
            f"{summary['latency_ms_p95']} ms, tbf drops {summary.get('tbf_drops', '-')}, "
            f"entry at the end {summary['tail_config']}")


def format_row(row: Dict) -> str:
    """One line of the per-second table."""
    def num(value, width, digits=0):
        return f'{value:{width}.{digits}f}' if value is not None else ' ' * (width - 1) + '-'
    return (f"{row['t_rel_s']:6d} {num(row['capacity_kbps'], 6)} {num(row['sent_kbps'], 7)} "
            f"{num(row['rx_kbps'], 7)} {num(row['estimate_kbps'], 7)} {row['masks']:5d} "
            f"{num(row['latency_p50_ms'], 6)} {num(row['latency_max_ms'], 6)}  {row['config']}")


TABLE_HEADER = ('     t    cap    sent arrived    est. masks    p50    max  config\n'
                '     s kbit/s  kbit/s  kbit/s  kbit/s   1/s     ms     ms')


def plot(rows: Sequence[Dict], switches: Sequence[Dict], ladder: Dict[str, float], t0: float,
         path: str, title: str) -> None:
    """Capacity, sent / arrived kbit/s, estimate and entry kbps over time; latency below."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    t = [r['t_rel_s'] + 0.5 for r in rows]

    def series(key):
        return [np.nan if r[key] is None else r[key] for r in rows]

    entry = [ladder.get(config_at(switches, r['t'] + 0.5), np.nan) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                      gridspec_kw={'height_ratios': [3, 2]})
    top.step(t, series('capacity_kbps'), where='mid', color='black', lw=2, label='capacity')
    top.plot(t, series('sent_kbps'), color='tab:blue', label='sent (edge)')
    top.plot(t, series('rx_kbps'), color='tab:green', label='arrived (cloud)')
    top.plot(t, series('estimate_kbps'), color='tab:orange', ls='--', label='estimate')
    top.step(t, entry, where='mid', color='tab:purple', ls=':', label='entry (profile kbps)')
    for switch in switches:
        top.axvline(switch['t'] - int(t0), color='0.8', lw=0.8, zorder=0)
    top.set_ylabel('kbit/s')
    top.legend(loc='upper right', fontsize=8)
    top.set_title(title)
    bottom.plot(t, series('latency_p50_ms'), color='tab:red', label='latency p50')
    bottom.plot(t, series('latency_max_ms'), color='tab:red', alpha=0.4, label='latency max')
    bottom.set_ylabel('end-to-end latency, ms')
    bottom.set_xlabel('s since the first phase')
    masks = bottom.twinx()
    masks.bar(t, series('masks'), width=0.8, color='0.6', alpha=0.3, label='masks/s')
    masks.set_ylabel('masks/s')
    bottom.legend(loc='upper left', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def checks_json(checks: Sequence[Check]) -> List[Dict]:
    """Return the checks as plain dicts."""
    return [asdict(check) for check in checks]
