"""Checks of `cloudseg wan-test` on synthetic per-second records (no network, no ROS)."""
from cloudseg_ros.tools import wan_report as report

LADDER = {'cheap': 200.0, 'mid': 700.0, 'dear': 3000.0}
T0 = 1000


def _record(t, sent_kbps, config, masks=8, latency_ms=150.0, switch=None):
    switches = [] if switch is None else [{'t': t + 0.5, 'config': switch, 'reason': 'test'}]
    return {'t': t, 'sent_bytes': int(sent_kbps * 125), 'sent_frames': 15,
            'rx_bytes': int(sent_kbps * 125), 'rx_frames': 15, 'masks': masks,
            'latency_ms': [latency_ms] * masks, 'config': config, 'estimate_kbps': 1000.0,
            'switches': switches}


def _run(drop_reaction_s=2, rise_reaction_s=4, gap=None, latency_ms=150.0):
    """8 Mbit/s 20 s at 'dear', then 1 Mbit/s 20 s, then 4 Mbit/s 20 s."""
    records = [_record(T0, 3000, 'dear', switch='dear')]
    records += [_record(t, 3000, 'dear') for t in range(T0 + 1, T0 + 20)]
    for t in range(T0 + 20, T0 + 40):
        config = 'dear' if t < T0 + 20 + drop_reaction_s else 'cheap'
        switch = 'cheap' if t == T0 + 20 + drop_reaction_s else None
        masks = 0 if gap and gap[0] <= t - T0 < gap[1] else 8
        records.append(_record(t, LADDER[config], config, masks, latency_ms, switch))
    for t in range(T0 + 40, T0 + 60):
        config = 'cheap' if t < T0 + 40 + rise_reaction_s else 'mid'
        switch = 'mid' if t == T0 + 40 + rise_reaction_s else None
        records.append(_record(t, LADDER[config], config, switch=switch))
    phases = [report.Phase(8000, T0, T0 + 20), report.Phase(1000, T0 + 20, T0 + 40),
              report.Phase(4000, T0 + 40, T0 + 60)]
    return report.merge_records(records), phases


def _by_name(checks):
    return {check.name: check for check in checks}


def test_a_following_controller_passes_every_check():
    merged, phases = _run()
    checks = _by_name(report.evaluate(merged, phases, LADDER, report.Limits()))
    assert all(check.passed for check in checks.values()), checks
    fit = checks['down to 1000 kbit/s: sent <= capacity']
    assert fit.value == 3.0  # the end of the first second at the cheap entry
    assert checks['up to 4000 kbit/s: dearer entry'].value == 4.5


def test_slow_reactions_gaps_and_high_latency_fail():
    merged, phases = _run(drop_reaction_s=9, rise_reaction_s=19, gap=(25, 30),
                          latency_ms=2500.0)
    checks = _by_name(report.evaluate(merged, phases, LADDER, report.Limits()))
    assert not checks['down to 1000 kbit/s: sent <= capacity'].passed
    assert not checks['masks at 1000 kbit/s'].passed
    assert not checks['latency at 1000 kbit/s'].passed
    assert checks['up to 4000 kbit/s: dearer entry'].passed is False  # 19.5 s > 15 s


def test_a_drop_the_robot_never_felt_is_not_counted_as_passed():
    merged, phases = _run()
    for t in range(T0 + 15, T0 + 23):
        merged[t]['sent_bytes'] = 500 * 125  # under the 1 Mbit/s that comes
    checks = _by_name(report.evaluate(merged, phases, LADDER, report.Limits()))
    assert not checks['down to 1000 kbit/s: exercised'].passed


def test_late_events_of_a_second_are_summed_and_rows_cover_the_phases():
    merged = report.merge_records([_record(T0, 800, 'mid'), _record(T0, 800, 'mid')])
    assert merged[T0]['masks'] == 16 and len(merged[T0]['latency_ms']) == 16
    rows = report.second_rows(merged, [report.Phase(1000, T0 + 0.4, T0 + 3.4)])
    assert [row['t'] for row in rows] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert rows[0]['sent_kbps'] == 1600.0 and rows[1]['masks'] == 0


def test_link_check_catches_a_bypass():
    merged, _ = _run()
    payload = sum(record['rx_bytes'] for record in merged.values())
    assert report.check_link_carried(merged, int(payload * 1.1)).passed
    assert not report.check_link_carried(merged, payload // 2).passed


def _outage_run(return_after_s=1, late_ms=None):
    """20 s at 'mid', the link cut 10 s (nothing arrives), 20 s again; masks return after
    `return_after_s`; `late_ms` gives the first 3 s after the restore that latency (backlog)."""
    records = [_record(t, 700, 'mid') for t in range(T0, T0 + 20)]
    records += [_record(t, 700, 'mid', masks=0) for t in range(T0 + 20, T0 + 30)]
    for t in range(T0 + 30, T0 + 50):
        since = t - (T0 + 30)
        masks = 0 if since < return_after_s else 8
        latency = late_ms if late_ms is not None and since < return_after_s + 3 else 150.0
        records.append(_record(t, 700, 'mid', masks, latency))
    phases = [report.Phase(4000, T0, T0 + 20), report.Phase(0, T0 + 20, T0 + 30),
              report.Phase(4000, T0 + 30, T0 + 50)]
    return report.merge_records(records), phases


def test_a_quick_clean_recovery_after_an_outage_passes():
    merged, phases = _outage_run()
    checks = report.evaluate(merged, phases, LADDER, report.Limits())
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    names = {c.name for c in checks}
    assert {'masks back after a 10 s outage', 'latency after a 10 s outage',
            'no backlog after a 10 s outage'} <= names
    assert not any('down to' in n or 'up to' in n or 'at 0 kbit/s' in n for n in names)


def test_backlog_after_an_outage_fails():
    merged, phases = _outage_run(late_ms=6000.0)  # frames held through the cut arrive late
    checks = _by_name(report.evaluate(merged, phases, LADDER, report.Limits()))
    assert not checks['no backlog after a 10 s outage'].passed
    assert checks['no backlog after a 10 s outage'].value == 24.0


def test_slow_return_and_lasting_latency_after_an_outage_fail():
    merged, phases = _outage_run(return_after_s=12)
    checks = _by_name(report.evaluate(merged, phases, LADDER, report.Limits()))
    assert not checks['masks back after a 10 s outage'].passed
    merged, phases = _outage_run(late_ms=900.0)  # p95 of the settled part above 1.5 x normal
    checks = _by_name(report.evaluate(merged, phases, LADDER, report.Limits()))
    assert not checks['latency after a 10 s outage'].passed
    assert checks['no backlog after a 10 s outage'].passed


class _Logged:
    """A stand-in for a LoggedProcess: a name and a log."""

    def __init__(self, name, text):
        self.name, self._text = name, text

    def log(self):
        return self._text


def test_zenoh_link_check_counts_only_tls_refusals():
    from cloudseg_ros.tools.wan_test import zenoh_link_check
    ep = 'tls/10.203.0.2:7447'
    edge = (f'[ERROR] [1] [robot1.edge]: uplink: no zenoh link to {ep}: cannot reach '
            f'{ep[4:]}: Connection refused\n'
            f'[INFO] [2] [robot1.edge]: uplink: zenoh link to {ep} up\n'
            f'[ERROR] [3] [robot1.edge]: uplink: no zenoh link to {ep}: the TLS handshake '
            'succeeds, but zenoh did not open a session\n')
    cloud = '[INFO] [1] [cloud]: uplink: zenoh router on tls/0.0.0.0:7447 for robot1\n'
    assert zenoh_link_check([_Logged('edge_node', edge), _Logged('cloud_node', cloud)]).passed
    refused = edge + (f"[ERROR] [4] [robot1.edge]: uplink: no zenoh link to {ep}: the server's "
                      'certificate was refused: unable to get local issuer certificate\n')
    check = zenoh_link_check([_Logged('edge_node', refused), _Logged('cloud_node', cloud)])
    assert not check.passed and 'local issuer' in check.detail
    assert not zenoh_link_check([_Logged('edge_node', edge), _Logged('cloud_node', '')]).passed
