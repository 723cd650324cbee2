"""The cloud's parameters: robot lists and pools validated, models_dir turned into engines."""
import os

import pytest

from cloudseg_ros.ros.cloud_params import check_namespaces


def test_valid_lists_are_normalised():
    assert check_namespaces(['', '/robot1', 'robot_2/', '/fleet/r3'], 8) == (
        '', '/robot1', 'robot_2', '/fleet/r3')


@pytest.mark.parametrize('names, reason', [
    (['/robot1', '/robot1/'], 'twice'),
    (['/1robot'], 'not a valid'),
    (['/robot 1'], 'not a valid'),
    (['/a//b'], 'not a valid'),
    (['/r%d' % i for i in range(5)], 'max_robots'),
])
def test_bad_lists_are_refused_with_a_reason(names, reason):
    with pytest.raises(ValueError, match=reason):
        check_namespaces(names, 4)


def test_warmup_scales_outside_1_to_4_are_refused_not_ignored():
    from cloudseg_ros.ros.cloud_params import check_warmup_scales
    assert check_warmup_scales([2, 4]) == (2, 4)
    with pytest.raises(ValueError, match=r'warmup_scales: \[7\]'):
        check_warmup_scales([2, 7])


@pytest.mark.parametrize('values, reason', [
    ({'server_pool': 'fleet/a'}, 'name token'),
    ({'server_pool': '1fleet'}, 'name token'),
    ({'server_pool': 'fleet', 'uplink_transport': 'zenoh'}, 'uplink_transport dds'),
])
def test_bad_server_pools_are_refused_with_a_reason(values, reason):
    from cloudseg_ros.ros.cloud_params import check_server_pool
    with pytest.raises(ValueError, match=reason):
        check_server_pool(values)
    check_server_pool({'server_pool': 'fleet_a', 'uplink_transport': 'dds'})
    check_server_pool({'server_pool': ''})


@pytest.mark.parametrize('changes, expected', [
    ({}, {2: 'seg_icnet_x2.pt'}),
    ({'sr_variant': 'bilinear'}, {}),  # tuned to the folder's aware SR output, not to bilinear
    ({'sr_variant': 'base'}, {}),  # nor to the base CARN-M's
    ({'seg_model': 'other.pt'}, {}),  # adapted from the folder's net, not from this one
])
def test_models_dir_per_scale_segmentation_nets_reach_the_engine(tmp_path, changes, expected):
    from cloudseg_ros.ros.cloud_params import CloudSettings, engine_configs, PARAMS
    # seg_icnet_x4.pt has no x4 SR beside it: no frame would reach it, so it is not loaded.
    for name in ('seg_icnet.pt', 'seg_icnet_x2.pt', 'sr_carnm_x2_aware.pt', 'seg_icnet_x4.pt'):
        (tmp_path / name).write_bytes(b'')
    values = {spec.name: spec.default for spec in PARAMS}
    values.update(models_dir=str(tmp_path), **changes)
    (config,) = engine_configs(values, CloudSettings.from_values(values))
    assert {s: os.path.basename(p) for s, p in config.seg_scale_checkpoints.items()} == expected
