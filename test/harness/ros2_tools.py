"""Whether the ROS 2 launch and command-line packages (launch, launch_ros, launch_pytest, ros2cli) are importable:
a ROS 2 install provides them, or the overlay `make setup` builds from ../shared/ros2-src (sourced by scripts/env.sh).
Without them the launch and ros2 CLI tests skip with that reason; with FLEETLANES_REQUIRE_ROS2_TOOLS set (CI, when
the sources are beside the project) a missing package is a failure instead of a skip."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable

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


def require_module() -> None:
    """At the top of a test module that imports the packages: skip it (or fail, when required) without them."""
    reason = missing_reason()
    if reason and os.environ.get(REQUIRE_ENV):
        raise pytest.UsageError(f'{REQUIRE_ENV} is set but {reason}')
    if reason:
        pytest.skip(reason, allow_module_level=True)


def require() -> pytest.MarkDecorator:
    """A skipif mark for tests needing the packages; a collection error instead when CI requires them."""
    reason = missing_reason()
    if reason and os.environ.get(REQUIRE_ENV):
        raise pytest.UsageError(f'{REQUIRE_ENV} is set but {reason}')
    return pytest.mark.skipif(bool(reason), reason=reason)


def launch_fixture(**options: object) -> Callable[[Callable[..., object]], object]:
    """launch_pytest.fixture, usable under pytest >= 8.4 and from this helper: launch_pytest 3.4 (Jazzy) reads the
    fixture's scope from `_pytestfixturefunction`, which pytest 8.4 replaced by `_fixture_function_marker` (aliased
    here), and puts event_loop/launch_service/launch_context fixtures of the fixture's scope into its caller's
    module (here: into the test module that called this)."""
    import launch_pytest

    fixtures = importlib.import_module('launch_pytest.fixture')

    scope = str(options.get('scope', 'function'))
    if scope != 'function':
        module_globals = sys._getframe(1).f_globals
        for name, make in (
            ('event_loop', fixtures.get_event_loop_fixture),
            ('launch_service', fixtures.get_launch_service_fixture),
            ('launch_context', fixtures.get_launch_context_fixture),
        ):
            module_globals.setdefault(name, make(scope=scope))

    def decorate(function: Callable[..., object]) -> object:
        fixture = launch_pytest.fixture(**options)(function)
        if not hasattr(fixture, '_pytestfixturefunction'):
            fixture._pytestfixturefunction = fixture._fixture_function_marker
        return fixture

    return decorate
