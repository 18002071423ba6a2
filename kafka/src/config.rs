use rdkafka::ClientConfig;

/// The default of `--kafka-fetch-wait-ms`: 10 ms, not 20. The in-process broker holds an
/// empty fetch for the full wait and tansu holds every fetch for it, so both deliver sooner
/// at idle, and tansu also under load, for one more empty fetch per idle consumer every
/// 20 ms (README, "Freshness and queries").
pub const DEFAULT_FETCH_WAIT_MS: u32 = 10;

/// Kafka flags shared by every role that talks to the broker.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topics are named `<prefix>.<stream type>.events`; one prefix per environment.
    #[arg(long, env = "ORDERFLOW_TOPIC_PREFIX", default_value = "orderflow")]
    pub topic_prefix: String,
    /// Partitions of each topic created at start (the ceiling on parallel projectors).
    #[arg(long, env = "ORDERFLOW_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Replication factor of each topic created at start (3 in production, 1 on a laptop).
    #[arg(long, env = "ORDERFLOW_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
    /// Longest time, in milliseconds, a broker may hold a consumer's fetch that has nothing
    /// to return. A broker that answers at the first record (Kafka) makes this only the rate
    /// of empty fetches on idle topics; one that holds an empty fetch for the full time
    /// (librdkafka's in-process broker, tansu) delays the first record by up to this much,
    /// and tansu, which holds a fetch that found records too, delays records under load by
    /// one to two waits.
    #[arg(long, env = "ORDERFLOW_KAFKA_FETCH_WAIT_MS", default_value_t = DEFAULT_FETCH_WAIT_MS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub kafka_fetch_wait_ms: u32,
}

impl KafkaArgs {
    pub fn new(brokers: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            kafka_brokers: brokers.into(),
            topic_prefix: prefix.into(),
            topic_partitions: 6,
            topic_replication: 1,
            kafka_fetch_wait_ms: DEFAULT_FETCH_WAIT_MS,
        }
    }

    /// The configuration every client starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.kafka_brokers)
            .set("broker.address.family", "v4")
            // A broker that comes back is reconnected to within a second (librdkafka's
            // default backs off up to 10 s, which held a relay's backlog that long after
            // an outage).
            .set("reconnect.backoff.max.ms", "1000")
            .set("log_level", "3");
        config
    }
}
