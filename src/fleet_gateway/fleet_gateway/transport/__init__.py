"""The gateway's transport: how bytes get in and out of client sockets, independent of the protocol and of ROS.

| module | what it is |
|---|---|
| `frame_split.py` | `GatewayConnection`: splits incoming frames itself, hands each message to the session at once |
| `framing.py` | server frames encoded once and shared; `next_client_frame`/`declared_size` for the incoming split |
| `connection.py` | `ClientConnection`: batched pre-framed writes, pings, wake timers |
| `window.py` | `InFlightWindow`: bytes allowed on their way to a client, learnt from its answers to pings |
| `budget.py` | `IngestBudget`: incoming work per event-loop turn |
| `shedding.py` | `Shedder`: best-effort publishes dropped unparsed beyond the budget |
| `listener.py` | the listening socket (receive buffer set before any connection) |
"""
