"""Summarise held-out recipe runs: a row per recipe, a column per held-out drive, the mean.

One held-out drive misleads: on CamVid the clean recipe beat the codec-robust one on 0006R0
and lost on 0001TP and 0016E5 (models/MODEL_CARD.md). `scripts/gpu_train.sh recipe-holdout`
with `HOLDOUT="0006R0 0001TP 0016E5"` writes one train-seg log per recipe and drive, whose
first line is `recipe <i> on <drive>: <k=v ...>`; this reads them and prints a Markdown table.

    python -m cloudseg_ros.training.holdout_summary logs/seg_holdout_*_recipe*.log
"""
from dataclasses import dataclass
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

_HEADER = re.compile(r'^recipe (\d+) on (\S+): ?(.*)$', re.MULTILINE)
_DONE = re.compile(r'done at step (\d+) .*last val mIoU ([0-9.na]+), held-out mIoU ([0-9.na]+), '
                   r'best ([0-9.na]+)')
_AGREE = re.compile(r'agree_jpeg50=([0-9.]+)')


@dataclass
class HoldoutRun:
    """What one train-seg run on one held-out drive ended with (None: did not finish)."""

    recipe: str
    drive: str
    steps: Optional[int] = None
    val_miou: Optional[float] = None
    holdout_miou: Optional[float] = None
    best_holdout_miou: Optional[float] = None
    agree_jpeg50: Optional[float] = None


def parse_run(text: str) -> Optional[HoldoutRun]:
    """The run a log describes, or None when its first `recipe <i> on <drive>:` line is missing."""
    header = _HEADER.search(text)
    if header is None:
        return None
    run = HoldoutRun(recipe=header.group(3).strip() or '(no overrides)', drive=header.group(2))
    done = _DONE.search(text)
    if done is not None:
        run.steps = int(done.group(1))
        run.val_miou, run.holdout_miou, run.best_holdout_miou = (
            float(done.group(k)) for k in (2, 3, 4))
    agree = _AGREE.findall(text)
    if agree:
        run.agree_jpeg50 = float(agree[-1])
    return run


def _cell(run: Optional[HoldoutRun]) -> str:
    if run is None:
        return 'not run'
    if run.holdout_miou is None:
        return 'unfinished'
    return f'{run.holdout_miou:.3f} ({run.best_holdout_miou:.3f})'


def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def summarise(runs: Sequence[HoldoutRun]) -> str:
    """Markdown table: held-out mIoU at the end (best) per drive, their mean, val agreement."""
    drives = sorted({r.drive for r in runs})
    recipes = list(dict.fromkeys(r.recipe for r in runs))  # first-seen order
    table: Dict[Tuple[str, str], HoldoutRun] = {(r.recipe, r.drive): r for r in runs}
    lines = ['| recipe | ' + ' | '.join(f'{d} end (best)' for d in drives)
             + ' | mean end | drives | mean val q50 agreement |',
             '| --- |' + ' ---: |' * (len(drives) + 3)]
    for recipe in recipes:
        row = [table.get((recipe, d)) for d in drives]
        done = [r for r in row if r is not None and r.holdout_miou is not None]
        mean = _mean([r.holdout_miou for r in done])
        agree = _mean([r.agree_jpeg50 for r in done if r.agree_jpeg50 is not None])
        lines.append(f'| {recipe} | ' + ' | '.join(_cell(r) for r in row)
                     + f' | {"-" if mean is None else f"{mean:.3f}"} | {len(done)}/{len(drives)}'
                     + f' | {"-" if agree is None else f"{agree:.3f}"} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the table for the logs named on the command line; 2 when none is a recipe log."""
    paths = list(sys.argv[1:] if argv is None else argv)
    runs = []
    for path in paths:
        with open(path, encoding='utf-8', errors='replace') as f:
            run = parse_run(f.read())
        if run is None:
            print(f'holdout_summary: {path}: no "recipe <i> on <drive>:" line, skipped',
                  file=sys.stderr)
        else:
            runs.append(run)
    if not runs:
        print('holdout_summary: no recipe-holdout logs given', file=sys.stderr)
        return 2
    print(summarise(runs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
