"""No callback exception ends a node: the shared guard and the parameter binder."""
import pytest

from cloudseg_ros.ros.guard import CallbackGuard


class _Logger:
    def __init__(self):
        self.lines = []

    def error(self, text):
        self.lines.append(text)


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _boom(msg):
    raise OverflowError(f'bad {msg}')


def test_guard_passes_results_through():
    guard = CallbackGuard(_Logger())
    assert guard.wrap('add', lambda a, b: a + b)(2, 3) == 5
    assert guard.errors == 0


def test_guard_drops_counts_and_logs_an_exception():
    logger, counted = _Logger(), []
    guard = CallbackGuard(logger)
    callback = guard.wrap('frames', _boom, on_error=lambda: counted.append(1))
    assert callback('frame') is None
    assert guard.errors == 1 and counted == [1]
    assert logger.lines == ['frames: input dropped after an unexpected error: '
                            'OverflowError: bad frame']


def test_guard_throttles_per_callback_and_reports_what_it_suppressed():
    logger, clock = _Logger(), _Clock()
    guard = CallbackGuard(logger, log_period_s=2.0, clock=clock)
    frames, stats = guard.wrap('frames', _boom), guard.wrap('stats', _boom)
    for _ in range(5):
        frames('x')
    stats('y')  # another callback has its own throttle
    clock.t = 2.5
    frames('z')
    assert guard.errors == 7
    assert len(logger.lines) == 3
    assert logger.lines[1].startswith('stats:')
    assert logger.lines[2].endswith('(4 more since the last report)')


def test_guard_escapes_what_the_exception_quotes():
    logger = _Logger()
    guard = CallbackGuard(logger)
    guard.wrap('frames', _boom)('x\n[INFO] forged' + 'y' * 5000)
    assert '\n' not in logger.lines[0] and len(logger.lines[0]) < 500


def test_guard_lets_keyboard_interrupt_through():
    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        CallbackGuard(_Logger()).wrap('spin', interrupted)()


def test_param_binder_refuses_a_change_whose_apply_fails():
    pytest.importorskip('rclpy')
    from rclpy.parameter import Parameter
    from cloudseg_ros.ros.params import ParamBinder, ParamSpec

    class _Node:
        def add_on_set_parameters_callback(self, callback):
            self.callback = callback

    def apply(config):
        if config['rate'] > 10:
            raise RuntimeError('cannot retune')

    node = _Node()
    binder = ParamBinder(node, [ParamSpec('rate', 1, 'Hz', 0, 100)], {'rate': 1}, dict, apply)
    result = node.callback([Parameter('rate', value=50)])
    assert not result.successful and 'RuntimeError: cannot retune' in result.reason
    assert binder.config == {'rate': 1}
    assert node.callback([Parameter('rate', value=5)]).successful
    assert binder.config == {'rate': 5}
