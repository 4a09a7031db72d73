//! Test doubles that behave like the real Inngest server (feature `testing`).
//!
//! - [`TestExecutor`] drives a served app the way the executor does (reference §4.4–4.5):
//!   signs requests, follows 206 op arrays, memoizes results under hashed ids, calls back with
//!   `stepId` for planned steps, retries with `attempt + 1` up to `max_attempts` (also after a
//!   lost connection, as the executor does), honours `X-Inngest-No-Retry` and `Sleep` ops,
//!   unwraps 201 streams, and records every call. [`RunHandle`] advances a run one call at a
//!   time, so a test can interleave runs, rerun a finished one with a new run id, or kill the
//!   worker between two calls; [`TestExecutor::lose_response_of`] makes a step's effect happen
//!   while its answer is lost, as after a timeout.
//! - [`FakeInngestServer`] serves `/fn/register` (with the dev server's validation rules, §2.3),
//!   `/e/{key}` and `/v0/runs/{id}/batch|actions`, recording requests; in self-hosted mode it
//!   requires the Bearer key like `inngest start`.
//! - [`validate_registration`]: the dev server's registration rules.

mod executor;
mod registration;
mod server;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use executor::{CallRecord, RunHandle, RunRecord, RunStatus, TestExecutor};
pub use registration::{parse_go_duration, validate_registration};
pub use server::{FakeInngestServer, RecordedRequest};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
