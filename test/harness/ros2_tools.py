"""Whether the ROS 2 launch and command-line packages (launch, launch_ros, launch_pytest, ros2cli) are importable:
a ROS 2 install provides them, or the overlay `make setup` builds from ../shared/ros2-src (sourced by scripts/env.sh).
Without them the launch and ros2 CLI tests skip with that reason; with FLEETLANES_REQUIRE_ROS2_TOOLS set (CI, when
the sources are beside the project) a missing package is a failure instead of a skip."""

from __future__ import annotations

import importlib.util
import os

import pytest

PACKAGES = ('launch', 'launch_ros', 'launch_pytest', 'ros2cli')
REQUIRE_ENV = 'FLEETLANES_REQUIRE_ROS2_TOOLS'


def missing_reason() -> str:
    """Empty when every package is importable, else why the tests that need them cannot run."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if not missing:
        return ''
    return (
        f'{", ".join(missing)} not importable: no ROS 2 install sourced and no ROS 2 overlay '
        '(make setup builds .overlay/ros2 when ../shared/ros2-src is beside the project; source scripts/env.sh)'
    )


def require() -> pytest.MarkDecorator:
    """A skipif mark for tests needing the packages; a collection error instead when CI requires them."""
    reason = missing_reason()
    if reason and os.environ.get(REQUIRE_ENV):
        raise pytest.UsageError(f'{REQUIRE_ENV} is set but {reason}')
    return pytest.mark.skipif(bool(reason), reason=reason)
