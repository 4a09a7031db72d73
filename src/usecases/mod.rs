//! The use cases that the Inngest adapters ([`crate::jobs`]) and the operator CLI
//! ([`crate::commands`]) share: take a backup, restore one, reap dead work, prune expired
//! backups ([`retention`]).
//!
//! Every effect here has a durable record of its outcome and answers a repeat with the saved
//! outcome instead of doing it again: Inngest delivers at least once (retried steps, duplicate
//! events, dashboard reruns with a new run id), and a worker can die between an effect and the
//! record of its result. Transitions name their owner run, so a failure path never undoes work
//! that succeeded or that another run owns.

pub mod backup;
pub mod reaper;
pub mod restore;
pub mod retention;

use std::future::Future;
use std::time::Duration;

/// How often long phases prove that their run is alive (the reaper fails work whose proof is
/// older than the step timeout).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Runs `work` while `beat` runs every [`HEARTBEAT_EVERY`] on a task of its own: a beat that
/// waits (a lock, a slow server) never holds the work up. A failed beat is logged, not fatal
/// (the reaper's threshold is far longer than one missed beat).
pub async fn with_heartbeat<T, W, B, BF>(work: W, beat: B) -> T
where
    W: Future<Output = T>,
    B: Fn() -> BF + Send + 'static,
    BF: Future<Output = Result<bool, sqlx::Error>> + Send,
{
    let beats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: the claim just proved it alive
        loop {
            tick.tick().await;
            if let Err(e) = beat().await {
                tracing::warn!(error = %e, "could not record a heartbeat");
            }
        }
    });
    let out = work.await;
    beats.abort();
    out
}
