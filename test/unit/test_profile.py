"""Stream configurations, Pareto fronts and the profile YAML format."""
import random
from typing import Optional

import numpy as np
import pytest
import yaml

from cloudseg_ros.core.profile import (Profile, ProfileEntry, StreamConfig, config_grid,
                                       load_profile, pareto_front, save_profile)


def entry(kbps: float, accuracy: float, scale: int = 4, quality: int = 70,
          labeled: Optional[float] = None) -> ProfileEntry:
    return ProfileEntry(StreamConfig(scale, 'jpeg', quality, 15.0, 0.03), kbps, accuracy,
                        labeled)


# ------------------------------------------------------------------------ StreamConfig
def test_names_are_short_and_unique():
    assert StreamConfig(4, 'jpeg', 70, 15.0, 0.03).name == 'x4-jpeg-q70-15hz-u0.03-k0.2'
    assert StreamConfig(2, 'h264', 28, 7.5, 0.05, 0.3).name == 'x2-h264-crf28-7.5hz-u0.05-k0.3'
    grid = config_grid([1, 2, 3, 4], ['jpeg', 'h264'], {'jpeg': [50, 90], 'h264': [23, 33]},
                       [5.0, 15.0], [0.02, (0.05, 0.4)])
    assert len({c.name for c in grid}) == len(grid) == 4 * 2 * 2 * 2 * 2


def test_edge_parameters_use_the_edge_node_names():
    assert StreamConfig(3, 'h264', 30, 10.0, 0.04, 0.25).edge_parameters() == {
        'scale': 3, 'codec': 'h264', 'h264_crf': 30, 'max_rate_hz': 10.0,
        'useful_threshold': 0.04, 'key_threshold': 0.25}
    assert 'jpeg_quality' in StreamConfig(4, 'jpeg', 70, 15.0, 0.03).edge_parameters()


@pytest.mark.parametrize('kwargs, message', [
    (dict(scale=5), 'scale'), (dict(scale=True), 'scale'), (dict(codec='png'), 'codec'),
    (dict(quality=0), 'jpeg quality'), (dict(codec='h264', quality=60), 'crf'),
    (dict(max_rate_hz=0.0), 'max_rate_hz'), (dict(useful_threshold=0.5), 'useful_threshold'),
    (dict(key_threshold=1.5), 'key_threshold'),
])
def test_stream_config_validation(kwargs, message):
    fields = dict(scale=4, codec='jpeg', quality=70, max_rate_hz=15.0, useful_threshold=0.03)
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        StreamConfig(**fields).validate()


@pytest.mark.parametrize('kbps, accuracy, labeled, message', [
    (0.0, 0.5, None, 'kbps'), (float('nan'), 0.5, None, 'kbps'), (100.0, 1.2, None, 'accuracy'),
    (100.0, float('nan'), None, 'accuracy'), (100.0, 0.5, -0.1, 'labeled_miou'),
])
def test_entry_validation(kbps, accuracy, labeled, message):
    with pytest.raises(ValueError, match=message):
        entry(kbps, accuracy, labeled=labeled).validate()


# ------------------------------------------------------------------------ Pareto front
def test_pareto_front_on_a_hand_made_set():
    a = entry(100.0, 0.50, quality=10)
    b = entry(200.0, 0.60, quality=20)
    c = entry(250.0, 0.55, quality=30)  # dominated by b: costs more, less accurate
    d = entry(300.0, 0.70, quality=40)
    e = entry(300.0, 0.65, quality=50)  # same cost as d, less accurate
    f = entry(400.0, 0.70, quality=60)  # as accurate as d, costs more
    g = entry(500.0, 0.80, quality=70)
    front = pareto_front([g, f, e, d, c, b, a])
    assert front == [a, b, d, g]  # by increasing kbps, accuracy strictly increasing
    assert pareto_front([]) == []
    assert pareto_front([c]) == [c]


def test_pareto_front_keeps_the_first_of_identical_points():
    first, second = entry(100.0, 0.5, quality=10), entry(100.0, 0.5, quality=20)
    assert pareto_front([first, second]) == [first]
    assert pareto_front([second, first]) == [second]


def test_no_front_entry_is_dominated():
    rng = random.Random(0)
    entries = [entry(rng.uniform(100, 5000), rng.uniform(0.3, 0.9), quality=q)
               for q in range(1, 101)]
    front = pareto_front(entries)
    for candidate in front:
        assert not any(other.kbps <= candidate.kbps and other.accuracy >= candidate.accuracy
                       and (other.kbps, other.accuracy) != (candidate.kbps, candidate.accuracy)
                       for other in entries)
    for outside in set(map(id, entries)) - set(map(id, front)):
        loser = next(e for e in entries if id(e) == outside)
        assert any(f.kbps <= loser.kbps and f.accuracy >= loser.accuracy for f in front)


# ----------------------------------------------------------------------------- grid
def test_config_grid_order_dedup_and_errors():
    grid = config_grid([4, 2], ['jpeg'], [60, 60, 80], [15.0], [0.03])
    assert [(c.scale, c.quality) for c in grid] == [(4, 60), (4, 80), (2, 60), (2, 80)]
    assert all(c.key_threshold == 0.2 for c in grid)
    with pytest.raises(ValueError, match='crf'):
        config_grid([4], ['h264'], [80], [15.0], [0.03])  # a JPEG quality is not a CRF
    with pytest.raises(ValueError, match="no list for codec 'h264'"):
        config_grid([4], ['jpeg', 'h264'], {'jpeg': [80]}, [15.0], [0.03])
    with pytest.raises(ValueError, match='scale'):
        config_grid([8], ['jpeg'], [80], [15.0], [0.03])


# ------------------------------------------------------------------------------ YAML
def sample_entries():
    return [entry(120.5, 0.41, scale=4, quality=40),
            entry(480.0, 0.66, scale=4, quality=80, labeled=0.52),
            entry(500.0, 0.58, scale=3, quality=50),  # dominated by the 480 kbps entry
            ProfileEntry(StreamConfig(2, 'h264', 28, 10.0, 0.05, 0.3), 900.0, 0.77, 0.61)]


def test_yaml_round_trip(tmp_path):
    entries = sample_entries()
    entries[0].kbps = np.float64(entries[0].kbps)  # measurements often come out of numpy
    path = tmp_path / 'profile.yaml'
    meta = {'clip': 'camvid/val', 'frames': np.int64(232), 'size': (480, 360)}
    save_profile(str(path), entries, meta=meta)
    profile = load_profile(str(path))
    assert isinstance(profile, Profile)
    assert profile.entries == entries
    assert profile.front == pareto_front(entries)
    assert [e.name for e in profile.front] == [entries[0].name, entries[1].name, entries[3].name]
    assert profile.meta == {'clip': 'camvid/val', 'frames': 232, 'size': [480, 360]}
    with pytest.raises(ValueError, match='meta'):
        save_profile(str(path), entries, meta={'when': object()})
    assert not list(tmp_path.glob('*.tmp'))  # the atomic write cleaned up after itself


def test_the_profile_says_which_x264_preset_its_bitrates_were_measured_with(tmp_path):
    path = str(tmp_path / 'profile.yaml')
    save_profile(path, sample_entries())
    assert load_profile(path).h264_preset == 'ultrafast'  # written before it was recorded
    save_profile(path, sample_entries(), meta={'h264_preset': 'veryfast'})
    assert load_profile(path).h264_preset == 'veryfast'
    save_profile(path, sample_entries(), meta={'h264_preset': 'placebo'})
    with pytest.raises(ValueError, match="profile.yaml: unknown x264 preset 'placebo'"):
        load_profile(path)


def test_explicit_front_is_kept_and_checked(tmp_path):
    entries = sample_entries()
    path = str(tmp_path / 'p.yaml')
    save_profile(path, entries, front=[entries[3], entries[0]])
    assert [e.kbps for e in load_profile(path).front] == [120.5, 900.0]
    with pytest.raises(ValueError, match='not among the entries'):
        save_profile(path, entries[:2], front=[entries[3]])
    with pytest.raises(ValueError, match='duplicate'):
        save_profile(path, entries + [entries[0]])
    with pytest.raises(ValueError, match=r'entries\[1\].*kbps'):
        save_profile(path, [entries[0], entry(-1.0, 0.5)])


def write_profile(tmp_path, mutate) -> str:
    """Save a valid profile, let `mutate` edit the parsed YAML, write it back."""
    path = tmp_path / 'profile.yaml'
    save_profile(str(path), sample_entries())
    document = yaml.safe_load(path.read_text())
    mutate(document)
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d['entries'][1].pop('kbps'), r'entries\[1\] \(x4-jpeg-q80.*\): missing key.*kbps'),
    (lambda d: d['entries'][0].update(kbps='fast'), r'entries\[0\].*kbps must be a number'),
    (lambda d: d['entries'][2].update(scale=True), r'entries\[2\].*scale must be an integer'),
    (lambda d: d['entries'][2].update(quality=50.5), r'entries\[2\].*quality must be an int'),
    (lambda d: d['entries'][3].update(codec=7), r'entries\[3\].*codec must be a string'),
    (lambda d: d['entries'][3].update(accuracy=1.5), r'entries\[3\].*accuracy must be in'),
    (lambda d: d['entries'][3].update(quality=99), r'entries\[3\].*crf'),
    (lambda d: d['entries'][0].update(name='x9'), r'entries\[0\].*name does not match'),
    (lambda d: d['entries'].append('oops'), r'entries\[4\]: expected a mapping'),
    (lambda d: d['entries'].append(dict(d['entries'][0])), r'entries\[4\]: duplicate'),
    (lambda d: d.update(entries=[]), 'non-empty list'),
    (lambda d: d.update(front=['x1-nothing']), 'front names entries that do not exist'),
    (lambda d: d.update(front='all'), 'list of entry names'),
    (lambda d: d.update(format_version=2), 'format_version'),
    (lambda d: d.update(meta=[1, 2]), 'meta'),
])
def test_malformed_files_raise_a_clear_error(tmp_path, mutate, message):
    path = write_profile(tmp_path, mutate)
    with pytest.raises(ValueError, match=message) as caught:
        load_profile(path)
    assert str(caught.value).startswith(path)


def test_unreadable_yaml_and_wrong_top_level(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('entries: [\n  - {scale: 4\n')
    with pytest.raises(ValueError, match='not valid YAML'):
        load_profile(str(path))
    path.write_text('- just\n- a list\n')
    with pytest.raises(ValueError, match='mapping at top level'):
        load_profile(str(path))


def test_front_may_be_omitted_in_hand_written_files(tmp_path):
    path = write_profile(tmp_path, lambda d: d.pop('front'))
    profile = load_profile(path)
    assert profile.front == pareto_front(profile.entries)
    assert profile.entries[1].labeled_miou == 0.52 and profile.entries[0].labeled_miou is None
