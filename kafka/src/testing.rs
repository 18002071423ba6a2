//! For tests against a shared broker: [`TestTopics`], a topic prefix of one's own whose topics
//! and consumer groups are deleted when it is dropped, so runs do not pile up state that
//! slows the next one down.

use std::ops::Deref;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use uuid::Uuid;

use crate::topics::{all_topics, ensure_topics};
use crate::KafkaArgs;

/// Every topic of a fresh prefix, created with `partitions` partitions.
#[derive(Debug)]
pub struct TestTopics {
    args: KafkaArgs,
}

impl TestTopics {
    pub async fn create(brokers: &str, partitions: i32) -> Self {
        let mut args = KafkaArgs::new(brokers, format!("t{}", Uuid::new_v4().simple()));
        args.topic_partitions = partitions;
        ensure_topics(&args).await.expect("topics created");
        Self { args }
    }

    pub fn args(&self) -> &KafkaArgs {
        &self.args
    }
}

impl Deref for TestTopics {
    type Target = KafkaArgs;

    fn deref(&self) -> &KafkaArgs {
        &self.args
    }
}

impl Drop for TestTopics {
    /// Best effort: a broker that is gone or refuses leaves the topics behind (a refused
    /// deletion is logged).
    fn drop(&mut self) {
        let args = self.args.clone();
        let cleanup = std::thread::spawn(move || {
            let timeout = Duration::from_secs(10);
            let options = AdminOptions::new().request_timeout(Some(timeout));
            let Ok(admin) = args
                .client_config()
                .create::<AdminClient<DefaultClientContext>>()
            else {
                return;
            };
            let groups: Vec<String> = args
                .client_config()
                .create::<BaseConsumer>()
                .ok()
                .and_then(|client| client.fetch_group_list(None, timeout).ok())
                .map(|list| {
                    list.groups()
                        .iter()
                        .map(|group| group.name().to_owned())
                        .filter(|name| name.starts_with(&format!("{}.", args.topic_prefix)))
                        .collect()
                })
                .unwrap_or_default();
            let topics = all_topics(&args.topic_prefix);
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            futures::executor::block_on(async {
                match admin.delete_topics(&topics, &options).await {
                    Ok(results) => {
                        for (topic, code) in results.into_iter().filter_map(Result::err) {
                            tracing::warn!(%topic, ?code, "a test topic was not deleted");
                        }
                    }
                    Err(err) => tracing::warn!(%err, "test topics were not deleted"),
                }
                if !groups.is_empty() {
                    match admin.delete_groups(&groups, &options).await {
                        Ok(results) => {
                            for (group, code) in results.into_iter().filter_map(Result::err) {
                                tracing::warn!(%group, ?code, "a test group was not deleted");
                            }
                        }
                        Err(err) => tracing::warn!(%err, "test consumer groups were not deleted"),
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}
