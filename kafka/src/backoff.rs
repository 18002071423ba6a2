//! [`Backoff`]: doubling pauses between retries of a loop that talks to the broker or the
//! database, so an outage is neither hammered nor waited out longer than needed.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Pauses start at `initial` and double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The pause to take now; the one after is twice as long, up to the maximum.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// After a success: the next failure waits the initial pause again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleep the next pause unless `shutdown` flips first. `true` means stop: shutdown was
    /// asked for, or can no longer be (its sender is gone), so a retry loop must not spin.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let pause = self.next_pause();
        tokio::select! {
            _ = tokio::time::sleep(pause) => *shutdown.borrow(),
            changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
        }
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let pauses: Vec<u128> = (0..4).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), Duration::from_millis(100));
    }
}
