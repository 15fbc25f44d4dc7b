"""fleetlanes WebSocket gateway: the rosbridge v2 protocol with auth, backpressure and admission control."""
