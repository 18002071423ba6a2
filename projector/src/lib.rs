//! Projector workers that fold events from Kafka into Postgres read models, and the replay engine.
