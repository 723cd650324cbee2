"""The held-out recipe table: parsing train-seg logs, missing and unfinished runs, the mean."""
from cloudseg_ros.training.holdout_summary import main, parse_run, summarise


def _log(recipe: str, drive: str, held: float, best: float, agree: float,
         done: bool = True) -> str:
    lines = [f'recipe 1 on {drive}: {recipe}',
             'train-seg: 266 train / 101 val / 101 held-out frames 480x360, 11 classes',
             f'train-seg eval @ step 500: miou=0.5 holdout_miou={best} agree_jpeg50=0.5',
             f'train-seg eval @ step 900: miou=0.6 holdout_miou={held} agree_jpeg50={agree}']
    if done:
        lines.append(f'train-seg: done at step 900 in 92s; last val mIoU 0.6000, '
                     f'held-out mIoU {held:.4f}, best {best:.4f}')
    return '\n'.join(lines) + '\n'


def test_parse_run_reads_the_end_of_a_run_and_the_last_agreement():
    run = parse_run(_log('cutmix_prob=0.5', '0001TP', 0.31, 0.35, 0.92))
    assert (run.recipe, run.drive, run.steps) == ('cutmix_prob=0.5', '0001TP', 900)
    assert (run.val_miou, run.holdout_miou, run.best_holdout_miou) == (0.6, 0.31, 0.35)
    assert run.agree_jpeg50 == 0.92
    assert parse_run(_log('', '0006R0', 0.4, 0.4, 0.9)).recipe == '(no overrides)'
    assert parse_run('train-seg: done at step 3 in 1s') is None  # no header: not a recipe log


def test_summary_means_finished_drives_and_marks_the_others():
    runs = [parse_run(_log('a=1', '0001TP', 0.30, 0.35, 0.90)),
            parse_run(_log('a=1', '0006R0', 0.40, 0.41, 0.94)),
            parse_run(_log('b=2', '0001TP', 0.20, 0.25, 0.80, done=False))]
    table = summarise(runs).splitlines()
    assert table[0].startswith('| recipe | 0001TP end (best) | 0006R0 end (best) | mean end')
    assert table[2] == '| a=1 | 0.300 (0.350) | 0.400 (0.410) | 0.350 | 2/2 | 0.920 |'
    assert table[3] == '| b=2 | unfinished | not run | - | 0/2 | - |'


def test_main_prints_the_table_and_refuses_logs_without_a_header(tmp_path, capsys):
    good, stray = tmp_path / 'good.log', tmp_path / 'stray.log'
    good.write_text(_log('a=1', '0016E5', 0.387, 0.397, 0.828))
    stray.write_text('train-seg: done at step 3 in 1s\n')
    assert main([str(good), str(stray)]) == 0
    out = capsys.readouterr()
    assert '| a=1 | 0.387 (0.397) | 0.387 | 1/1 | 0.828 |' in out.out
    assert 'stray.log' in out.err
    assert main([str(stray)]) == 2
