"""Python `logging` and `warnings` of the layers without rclpy, forwarded to a node's logger.

inference/ (and core/, nets/) log through the standard `logging` module, and torch warns
through `warnings`; in a node process neither reached /rosout, `ros2 launch`'s log files or
rqt_console: a CUDA graph capture failing and falling back to eager said so only on stderr.
`forward_python_logs(node)` hands both to the node's rclpy logger, at the matching severity
and with the Python logger's name in front (`[cloudseg_ros.inference.engine] ...`).
"""
import logging
from typing import List, Tuple

from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.node import Node

# The package's loggers (every module's `logging.getLogger(__name__)`) and Python's warnings.
FORWARDED_LOGGERS = ('cloudseg_ros', 'py.warnings')


class RosLogHandler(logging.Handler):
    """A logging.Handler writing each record to an rclpy logger (and so to /rosout)."""

    def __init__(self, ros_logger: RcutilsLogger) -> None:
        super().__init__()
        self._ros_logger = ros_logger
        self._attached: List[Tuple[logging.Logger, int]] = []  # (logger, level before)
        self._captured_warnings = False
        self.setFormatter(logging.Formatter('[%(name)s] %(message)s'))

    def emit(self, record: logging.LogRecord) -> None:
        """Log the formatted record (with its traceback, if any) at the matching severity."""
        try:
            self._log(self.format(record), record.levelno)
        except Exception:  # noqa: B902 (logging's contract: a failing handler must not raise)
            self.handleError(record)

    def _log(self, message: str, level: int) -> None:
        # One call site per severity: rclpy keys its logging context by the calling line and
        # refuses a second severity from the same line.
        logger = self._ros_logger
        if level >= logging.CRITICAL:
            logger.fatal(message)
        elif level >= logging.ERROR:
            logger.error(message)
        elif level >= logging.WARNING:
            logger.warning(message)
        elif level >= logging.INFO:
            logger.info(message)
        else:
            logger.debug(message)

    def attach(self, names=FORWARDED_LOGGERS) -> 'RosLogHandler':
        """Receive the records of the loggers `names`, at the rclpy logger's level and above."""
        # rclpy's severities are logging's numbers (DEBUG 10 .. FATAL 50).
        level = max(logging.DEBUG, int(self._ros_logger.get_effective_level()))
        for name in names:
            logger = logging.getLogger(name)
            for old in [h for h in logger.handlers if isinstance(h, RosLogHandler)]:
                old.detach()  # one node per process owns them: the newest one
            self._attached.append((logger, logger.level))
            logger.addHandler(self)
            logger.setLevel(level)
        if 'py.warnings' in names:
            logging.captureWarnings(True)  # warnings.warn() -> the 'py.warnings' logger
            self._captured_warnings = True
        return self

    def detach(self) -> None:
        """Stop forwarding; the loggers get their levels back."""
        for logger, level in self._attached:
            logger.removeHandler(self)
            logger.setLevel(level)
        self._attached = []
        if self._captured_warnings:
            logging.captureWarnings(False)
            self._captured_warnings = False


def forward_python_logs(node: Node) -> RosLogHandler:
    """Forward the package's Python logging and Python warnings to `node`'s logger."""
    return RosLogHandler(node.get_logger()).attach()
