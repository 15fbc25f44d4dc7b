"""One module per fleetctl verb; each exposes `register(subparsers)` and sets `func(args) -> int` on its parser."""

VERBS: tuple[str, ...] = (
    'submit',
    'outcome',
    'status',
    'watch',
    'trace',
    'estop',
    'mission',
    'operation',
    'record',
    'replay',
    'up',
)
