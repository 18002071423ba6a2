//! The relay's publisher: idempotent (`enable.idempotence`, `acks=all`), so librdkafka's own
//! retries never reorder or duplicate within a partition, and batched: a whole page of events
//! is in flight at once and the call returns when the broker has acknowledged all of it.

use std::time::Duration;

use futures::future::try_join_all;
use orderflow_store::StoredEvent;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::envelope;
use crate::topics::events_topic;
use crate::KafkaArgs;

/// A page handed to the producer, not yet acknowledged.
#[must_use = "a page is published once it is acknowledged"]
pub struct Sending {
    deliveries: Vec<DeliveryFuture>,
}

impl Sending {
    /// Wait until the broker has acknowledged every event of the page: the partition and
    /// offset each landed at, in the page's order.
    pub async fn acknowledged(self) -> Result<Vec<(i32, i64)>, KafkaError> {
        let results = try_join_all(self.deliveries)
            .await
            .map_err(|_| KafkaError::Canceled)?;
        results
            .into_iter()
            .map(|result| {
                result
                    .map(|delivery| (delivery.partition, delivery.offset))
                    .map_err(|(err, _)| err)
            })
            .collect()
    }
}

#[derive(Clone)]
pub struct EventPublisher {
    producer: FutureProducer,
    prefix: String,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How long a prompt producer ([`EventPublisher::new`]) waits to fill a batch: a page is
/// handed over at once, so it is batched without waiting, and a lone event on an idle
/// system goes out after at most a millisecond.
pub const PROMPT_LINGER: Duration = Duration::from_millis(1);

/// How long a batching producer ([`EventPublisher::with_linger`]) waits to fill a batch: under
/// load its records go out in fewer, larger requests, which costs a broker less (README,
/// "Freshness and queries", the relay's two producers and the eighth round: 20 ms took
/// tansu from about half a core to 40% at 1,000 commands/s, for 10–17 ms more at the
/// median).
pub const BATCHING_LINGER: Duration = Duration::from_millis(20);

impl EventPublisher {
    /// A prompt producer ([`PROMPT_LINGER`]). `delivery_timeout` bounds how long one
    /// publish waits for an unreachable broker before failing, so that the relay can back
    /// off and try again.
    pub fn new(args: &KafkaArgs, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        Self::with_linger(args, delivery_timeout, PROMPT_LINGER)
    }

    /// A producer that waits up to `linger` to fill a batch ([`PROMPT_LINGER`],
    /// [`BATCHING_LINGER`]).
    pub fn with_linger(
        args: &KafkaArgs,
        delivery_timeout: Duration,
        linger: Duration,
    ) -> Result<Self, KafkaError> {
        let producer = args
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger.as_millis().to_string())
            .set("compression.type", "lz4")
            // Consumers rewind this far when they are assigned a partition (see
            // `consumer::Rewind`).
            .set(
                "batch.num.messages",
                crate::consumer::MAX_BATCH_RECORDS.to_string(),
            )
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            producer,
            prefix: args.topic_prefix.clone(),
        })
    }

    /// The underlying producer, for dead letters and tests.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Publish `events` in order (key = stream id) and wait until the broker has
    /// acknowledged every one of them; the answer is the partition and offset each landed
    /// at.
    pub async fn publish(&self, events: &[StoredEvent]) -> Result<Vec<(i32, i64)>, KafkaError> {
        self.send(events).await?.acknowledged().await
    }

    /// Hand `events` to the producer in order (key = stream id), waiting only while its
    /// queue is full; [`Sending::acknowledged`] then waits for the broker. Pages sent one
    /// after the other keep their order (the producer is idempotent).
    pub async fn send(&self, events: &[StoredEvent]) -> Result<Sending, KafkaError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let topic = events_topic(&self.prefix, &event.stream_type);
            let key = event.stream_id.to_string();
            let payload = serde_json::to_vec(&event.payload).expect("JSON values serialize");
            let headers = envelope::headers(event);
            loop {
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers.clone());
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // The local queue is full: let what is in flight drain, then go on.
                        self.producer.poll(Duration::from_millis(10));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((err, _)) => return Err(err),
                }
            }
        }
        Ok(Sending { deliveries })
    }

    /// A fatal error (e.g. a fenced idempotent producer) makes this producer unusable.
    pub fn has_fatal_error(&self) -> bool {
        self.producer.client().fatal_error().is_some()
    }

    /// Whether every record handed to this producer has been acknowledged or has failed:
    /// none is queued or on its way to the broker.
    pub fn is_quiet(&self) -> bool {
        self.producer.in_flight_count() == 0
    }

    /// Wait for whatever is still in flight (on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
