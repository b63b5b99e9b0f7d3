//! Background tasks that live exactly as long as their owner: dropping the
//! [`BackgroundTask`] aborts the task, so a stopped application (or a test
//! that drops its app) leaves nothing running.

use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct BackgroundTask(JoinHandle<()>);

impl BackgroundTask {
    pub fn spawn(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(future))
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
