//! Background tasks that live exactly as long as their owner: dropping the
//! [`BackgroundTask`] aborts the task, so a stopped application (or a test
//! that drops its app) leaves nothing running.

use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct BackgroundTask(JoinHandle<()>);

impl BackgroundTask {
    pub fn spawn(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(future))
    }

    /// Runs `tick` now and then every `period` (a late tick delays the next
    /// one rather than bunching up), until dropped.
    pub fn every<F, Fut>(period: Duration, mut tick: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        Self::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                tick().await;
            }
        })
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
