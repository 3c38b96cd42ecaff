"""Exchange with partner agencies' collectors over NATS JetStream (accounts, streams, outbox)."""
