"""Declare node parameters from one table and validate live changes.

Each node lists its parameters as `ParamSpec`s. `declare_params` gives every one a descriptor
(description with units, integer/floating-point range, read-only flag) and returns the values;
`ParamBinder` turns a parameter change into a new config dataclass that the node's own check
(cross-parameter rules, enum values) accepts or refuses with a reason; an exception while
building or applying it refuses the change instead of ending the node. rclpy itself refuses
values outside a descriptor's range and type changes before our callback runs.

Parameters in `LOCKED_AFTER_START` (rclpy's own `use_sim_time`) are refused once the node runs:
they are set at launch. `use_sim_time` switched live by anyone on the domain moved every stamp
to a clock that may never tick (issue 12). ParamBinder's callback is registered after rclpy's
TimeSource one and rclpy calls the latest first (read in Kilted's rclpy 9.1; older rclpy's
`add_on_set_parameters_callback` inserts at the front too: read, not run here), so a refusal
leaves the clock untouched.

Works on Humble, Jazzy and Kilted: only `add_on_set_parameters_callback` and
`remove_on_set_parameters_callback` (a managed node's cleanup: `detach()`) are used.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.node import Node
from rclpy.parameter import Parameter

LOCKED_AFTER_START = ('use_sim_time',)


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: name, default, human description with units, and range."""

    name: str
    default: Any
    description: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    choices: Tuple[Any, ...] = ()
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        """Build the ROS descriptor: ranges only for numbers, choices listed in the text."""
        text = self.description
        if self.choices:
            text += ' One of: ' + ', '.join(str(c) for c in self.choices) + '.'
        desc = ParameterDescriptor(description=text, read_only=self.read_only)
        has_range = self.min_value is not None and self.max_value is not None
        if has_range and isinstance(self.default, bool):
            has_range = False
        if has_range and isinstance(self.default, int):
            desc.integer_range = [IntegerRange(
                from_value=int(self.min_value), to_value=int(self.max_value), step=1)]
        elif has_range and isinstance(self.default, float):
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)]
        return desc


def declare_params(node: Node, specs: Iterable[ParamSpec]) -> Dict[str, Any]:
    """Declare every spec on the node; return {name: value} after overrides from the launch."""
    values = {}
    for spec in specs:
        param = node.declare_parameter(spec.name, spec.default, spec.descriptor())
        values[spec.name] = param.value
    return values


def check_choices(specs: Iterable[ParamSpec], values: Dict[str, Any]) -> Optional[str]:
    """Return a reason if a value is not one of its spec's choices, else None."""
    for spec in specs:
        if spec.choices and spec.name in values and values[spec.name] not in spec.choices:
            allowed = ', '.join(str(c) for c in spec.choices)
            return f"{spec.name}={values[spec.name]!r} is not one of: {allowed}"
    return None


def config_from_values(config_type: type, values: Dict[str, Any]) -> Any:
    """Fill the dataclass fields whose names match parameter names (dots become underscores)."""
    names = {f.name for f in dataclasses.fields(config_type)}
    kwargs = {k.replace('.', '_'): v for k, v in values.items() if k.replace('.', '_') in names}
    return config_type(**kwargs)


class ParamBinder:
    """Keep a node's config dataclass in sync with its parameters, refusing invalid changes.

    `make_config(values)` builds the config from a full {name: value} dict and raises
    ValueError with a reason when the combination is invalid; `apply(config)` hands an accepted
    config to the node (if it raises, the change is refused).
    """

    def __init__(self, node: Node, specs: Sequence[ParamSpec], values: Dict[str, Any],
                 make_config: Callable[[Dict[str, Any]], Any],
                 apply: Callable[[Any], None]) -> None:
        self._specs = list(specs)
        self._values = dict(values)
        self._make_config = make_config
        self._apply = apply
        self.config = make_config(self._values)
        self._node = node
        node.add_on_set_parameters_callback(self._on_set)

    def detach(self) -> None:
        """Stop checking changes (a managed node's cleanup; the next configure binds anew)."""
        self._node.remove_on_set_parameters_callback(self._on_set)

    def _on_set(self, params: List[Parameter]) -> SetParametersResult:
        locked = [p.name for p in params if p.name in LOCKED_AFTER_START]
        if locked:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(locked)} is fixed after start: set it at launch"))
        candidate = dict(self._values)
        candidate.update({p.name: p.value for p in params if p.name in candidate})
        reason = check_choices(self._specs, candidate)
        if reason is None:
            # Any failure refuses the change: an exception here would end the node, and the
            # parameter services are open to every participant on the domain.
            try:
                config = self._make_config(candidate)
                self._apply(config)
            except (ValueError, TypeError) as err:
                reason = str(err)
            except Exception as err:  # noqa: B902
                reason = f'{type(err).__name__}: {err}'
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        self._values, self.config = candidate, config
        return SetParametersResult(successful=True)
