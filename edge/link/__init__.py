"""The edge-to-collector link: wire format, durable outbox, and the delivery loop."""
