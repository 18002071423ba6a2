//! Kafka plumbing: envelope and headers, topic names, producer/consumer, dead letters, lag monitor.
