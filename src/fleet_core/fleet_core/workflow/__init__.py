"""Deterministic multi-step workflows defined in YAML (config/workflows/) and run once per agent and mission."""

from fleet_core.workflow.instance import (
    Effect,
    FeedResult,
    Point,
    PointFinished,
    StateEntered,
    StepRequest,
    WorkflowInstance,
    WorkflowStateError,
)
from fleet_core.workflow.loader import load_workflow, parse_workflow
from fleet_core.workflow.spec import Event, WorkflowError, WorkflowSpec

__all__ = [
    'Effect',
    'Event',
    'FeedResult',
    'Point',
    'PointFinished',
    'StateEntered',
    'StepRequest',
    'WorkflowError',
    'WorkflowInstance',
    'WorkflowSpec',
    'WorkflowStateError',
    'load_workflow',
    'parse_workflow',
]
