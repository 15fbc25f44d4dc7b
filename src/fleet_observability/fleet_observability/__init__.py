"""fleetlanes observability: metrics, /diagnostics, the Foxglove server, MCAP recording and command traces."""
