"""Pieces shared by the training entry points: optimiser, LR schedule, autocast, loop, resume.

The loop stops at `steps` or at `time_budget_s`, whichever comes first, and the LR schedule
follows the same fraction, so a run cut short by its time budget still ends with an annealed LR
(device time is scarce; a run must finish well inside its slot whatever its speed).
"""
import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator

import torch
from torch import nn

from .progress import Progress

STATE_FILE = 'train_state.pt'  # optimiser + step + elapsed time, for --resume
LAST_FILE = 'last.pt'  # latest model checkpoint (nets.checkpoint format)
BEST_FILE = 'best.pt'  # best model by the validation metric


def build_optimizer(params: Any, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """'adamw' or 'sgd' (Nesterov momentum); fused kernels on CUDA."""
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and params[0].is_cuda
    if name == 'adamw':
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if name == 'sgd':
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                               weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}' (adamw or sgd)")


def lr_factor(frac: float, schedule: str, warmup_frac: float = 0.0,
              min_factor: float = 0.0) -> float:
    """LR multiplier at training fraction `frac` in [0, 1]: linear warmup then poly/cosine."""
    frac = min(max(frac, 0.0), 1.0)
    if warmup_frac > 0 and frac < warmup_frac:
        return max(1e-3, frac / warmup_frac)
    t = (frac - warmup_frac) / max(1e-9, 1.0 - warmup_frac)
    if schedule == 'poly':
        decay = (1.0 - t) ** 0.9
    elif schedule == 'cosine':
        decay = 0.5 * (1.0 + math.cos(math.pi * t))
    elif schedule == 'constant':
        decay = 1.0
    else:
        raise ValueError(f"unknown LR schedule '{schedule}' (poly, cosine, constant)")
    return min_factor + (1.0 - min_factor) * decay


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op on CPU, where bf16 is slow."""
    if enabled and device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup_backend(device: torch.device) -> None:
    """Fast defaults on CUDA: cuDNN autotuning for fixed crop sizes, TF32 matmuls."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def maybe_compile(model: nn.Module, enabled: bool, device: torch.device) -> nn.Module:
    """torch.compile the training forward on CUDA when asked; the raw module is kept for eval."""
    if enabled and device.type == 'cuda':
        return torch.compile(model)
    return model


@dataclass
class LoopState:
    """What --resume restores besides the weights."""

    step: int = 0
    elapsed_s: float = 0.0
    best: float = -math.inf
    extra: Dict[str, Any] = field(default_factory=dict)


def save_train_state(out_dir: str, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
    """Write the optimiser and loop state atomically (a killed job never leaves half a file)."""
    path = os.path.join(out_dir, STATE_FILE)
    torch.save({'optimizer': optimizer.state_dict(), 'step': state.step,
                'elapsed_s': state.elapsed_s, 'best': state.best, 'extra': state.extra},
               path + '.tmp')
    os.replace(path + '.tmp', path)


def load_train_state(out_dir: str, optimizer: torch.optim.Optimizer) -> LoopState:
    """Restore what `save_train_state` wrote into `optimizer`; returns the loop state."""
    path = os.path.join(out_dir, STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--resume: no {STATE_FILE} in {out_dir}')
    data = torch.load(path, map_location='cpu', weights_only=True)
    optimizer.load_state_dict(data['optimizer'])
    return LoopState(int(data['step']), float(data['elapsed_s']), float(data['best']),
                     dict(data.get('extra') or {}))


@dataclass
class LoopSpec:
    """How long to train and how often to log, evaluate and save."""

    steps: int
    time_budget_s: float = 0.0  # 0: no time limit
    log_every: int = 50
    eval_every: int = 500
    lr: float = 1e-3
    schedule: str = 'poly'
    warmup_frac: float = 0.0
    min_lr_factor: float = 0.0


def _fraction(spec: LoopSpec, step: int, elapsed_s: float) -> float:
    frac = step / max(1, spec.steps)
    if spec.time_budget_s > 0:
        frac = max(frac, elapsed_s / spec.time_budget_s)
    return frac


def run_loop(spec: LoopSpec, state: LoopState, optimizer: torch.optim.Optimizer,
             step_fn: Callable[[int], Dict[str, torch.Tensor]],
             eval_fn: Callable[[], Dict[str, float]],
             checkpoint_fn: Callable[[LoopState, Dict[str, float]], None],
             label: str = 'train') -> Dict[str, float]:
    """Train from `state.step` until `spec.steps` or the time budget; returns the last metrics.

    `step_fn(step)` does one optimiser step and returns scalar tensors (synchronised only when
    a line is printed); `eval_fn()` returns validation metrics; `checkpoint_fn(state, metrics)`
    saves after every evaluation and at the end.
    """
    progress = Progress(spec.steps, label, every=1, unit='step', start_count=state.step,
                        time_budget_s=(spec.time_budget_s - state.elapsed_s
                                       if spec.time_budget_s > 0 else None))
    start, base_elapsed = time.perf_counter(), state.elapsed_s
    sums: Dict[str, torch.Tensor] = {}
    count, metrics = 0, {}
    while True:
        state.elapsed_s = base_elapsed + time.perf_counter() - start
        frac = _fraction(spec, state.step, state.elapsed_s)
        if frac >= 1.0:
            break
        lr = spec.lr * lr_factor(frac, spec.schedule, spec.warmup_frac, spec.min_lr_factor)
        for group in optimizer.param_groups:
            group['lr'] = lr
        for key, value in step_fn(state.step).items():
            sums[key] = sums.get(key, 0.0) + value.detach()
        state.step += 1
        count += 1
        if state.step % spec.log_every == 0:
            _log(progress, state.step, sums, count, lr)
            sums, count = {}, 0
        if spec.eval_every and state.step % spec.eval_every == 0:
            metrics = _evaluate_and_save(eval_fn, checkpoint_fn, state, progress)
    state.elapsed_s = base_elapsed + time.perf_counter() - start
    progress.count = state.step
    if not metrics or not spec.eval_every or state.step % spec.eval_every:
        metrics = _evaluate_and_save(eval_fn, checkpoint_fn, state, progress)
    return metrics


def _log(progress: Progress, step: int, sums: Dict[str, torch.Tensor], count: int,
         lr: float) -> None:
    """Print the mean of each logged scalar since the last line (the only GPU sync)."""
    values: Dict[str, float] = {k: float(v) / count for k, v in sums.items()}
    values['lr'] = lr
    progress.count = step
    progress.write(progress.line(values))


def _evaluate_and_save(eval_fn: Callable[[], Dict[str, float]],
                       checkpoint_fn: Callable[[LoopState, Dict[str, float]], None],
                       state: LoopState, progress: Progress) -> Dict[str, float]:
    t0 = time.perf_counter()
    metrics = eval_fn()
    shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
    if shown:  # nothing to show when there is nothing to score on (adapt without held-out frames)
        progress.write(f'{progress.label} eval @ step {state.step}: '
                       + ' '.join(f'{k}={v:.4f}' for k, v in shown.items())
                       + f' ({time.perf_counter() - t0:.1f}s)')
    checkpoint_fn(state, metrics)
    return metrics


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch to eval mode, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class WeightAverage:
    """Exponential moving average of a model's weights (buffers copied), kept in a twin model.

    The average of the last few thousand steps generalises better than the last step's
    weights when the data set is small. The decay ramps up from 0 ((1 + n) / (10 + n)) so the
    twin does not stay anchored to the random initialisation in short runs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.source = model
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward the source model's current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for p_avg, p_src in zip(self.model.parameters(), self.source.parameters()):
            p_avg.lerp_(p_src.detach(), 1.0 - decay)
        for b_avg, b_src in zip(self.model.buffers(), self.source.buffers()):
            b_avg.copy_(b_src)


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (shared CARN-M blocks counted once)."""
    return sum(p.numel() for p in model.parameters())


def to_device_stack(images: Any, device: torch.device) -> torch.Tensor:
    """Turn a numpy uint8 array into a tensor on `device` (one copy; whole splits live there)."""
    return torch.from_numpy(images).to(device)
