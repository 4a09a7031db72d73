//! The error type handlers and step bodies return, and how it maps onto retries.

use std::fmt;
use std::time::Duration;

use crate::types::ErrorBody;

/// Retry behaviour carried by an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retried with the executor's backoff until attempts run out.
    Retriable,
    /// Fails the step (or run) immediately.
    NonRetriable,
    /// Retried no earlier than after the given delay.
    After(Duration),
    /// A step that already failed permanently (memoized `{"error": …}`); if the handler lets
    /// it escape, the run fails without retry (spec §5.2.2).
    StepFailed,
}

/// A failure with an Inngest-visible `name` and `message`.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    name: String,
    message: String,
    stack: Option<String>,
    retry: Retry,
}

impl Error {
    /// A failure that should be retried.
    pub fn retriable(message: impl Into<String>) -> Self {
        Self::build("Error", message, Retry::Retriable)
    }

    /// A failure that retrying cannot fix (bad input, missing resource).
    pub fn non_retriable(message: impl Into<String>) -> Self {
        Self::build("NonRetriableError", message, Retry::NonRetriable)
    }

    /// A failure to retry after `delay` (e.g. a rate limit with a known reset time).
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self::build("RetryAfterError", message, Retry::After(delay))
    }

    pub(crate) fn step_failed(body: ErrorBody) -> Self {
        Self {
            name: body.name,
            message: body.message,
            stack: body.stack,
            retry: Retry::StepFailed,
        }
    }

    fn build(name: &str, message: impl Into<String>, retry: Retry) -> Self {
        Self {
            name: name.to_owned(),
            message: message.into(),
            stack: None,
            retry,
        }
    }

    /// Overrides the error name shown in the Inngest UI.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// Whether the executor may try again.
    pub fn is_retriable(&self) -> bool {
        matches!(self.retry, Retry::Retriable | Retry::After(_))
    }

    /// True for an error read back from a permanently failed step.
    pub fn is_step_failure(&self) -> bool {
        self.retry == Retry::StepFailed
    }

    pub(crate) fn to_body(&self) -> ErrorBody {
        ErrorBody {
            name: self.name.clone(),
            message: self.message.clone(),
            stack: self.stack.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}): {}", self.name, self.retry, self.message)?;
        if let Some(stack) = &self.stack {
            write!(f, "\n{stack}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<anyhow::Error> for Error {
    /// Retriable, with the whole cause chain as message and its debug form as stack.
    fn from(err: anyhow::Error) -> Self {
        Self {
            name: "Error".to_owned(),
            message: format!("{err:#}"),
            stack: Some(format!("{err:?}")),
            retry: Retry::Retriable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anyhow_errors_are_retriable_and_keep_the_chain() {
        let err: Error = anyhow::anyhow!("root").context("outer").into();
        assert!(err.is_retriable());
        assert_eq!(err.message(), "outer: root");
    }

    #[test]
    fn retry_kinds_map_to_retriability() {
        assert!(!Error::non_retriable("x").is_retriable());
        assert!(Error::retry_after("x", Duration::from_secs(3)).is_retriable());
        let failed = Error::step_failed(Error::retriable("x").to_body());
        assert!(failed.is_step_failure());
        assert!(!failed.is_retriable());
    }
}
