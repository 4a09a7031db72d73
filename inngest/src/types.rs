//! Wire structs of the execution protocol (reference §1.4.3, §4.2) and the event shape.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An Inngest event, as sent to `/e/<key>` and received in execution requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Idempotency key: re-sending an event with the same id does not start new runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub data: Value,
    /// Milliseconds since the Unix epoch; the server fills it when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Event schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
    /// Deprecated by Inngest but still sent by the executor (`{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
}

impl Event {
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        Self {
            id: None,
            name: name.into(),
            data,
            ts: None,
            v: None,
            user: None,
        }
    }

    /// Sets the idempotency id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the timestamp (ms since epoch).
    pub fn with_ts(mut self, ts: i64) -> Self {
        self.ts = Some(ts);
        self
    }
}

/// Body of an execution POST (`SDKRequest` on the server).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallRequest {
    #[serde(default)]
    pub event: Option<Event>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Memoized step results keyed by hashed step id. `null` values are meaningful (sleeps),
    /// so presence is tested with `contains_key`.
    #[serde(default)]
    pub steps: HashMap<String, Value>,
    #[serde(default)]
    pub ctx: CallContext,
    #[serde(default)]
    pub version: Option<i64>,
    /// Legacy top-level copy of `ctx.use_api`.
    #[serde(default)]
    pub use_api: bool,
}

/// `ctx` of an execution request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallContext {
    /// The server's function UUID (not the composite id).
    #[serde(default)]
    pub fn_id: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub step_id: Option<String>,
    /// Zero-based attempt of the current queue item (a step or a discovery call).
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub stack: Option<CallStack>,
    /// Set after parallel steps: every new step must be planned, never run inline.
    #[serde(default)]
    pub disable_immediate_execution: bool,
    #[serde(default)]
    pub use_api: bool,
}

/// `ctx.stack`: completion order of memoized steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallStack {
    #[serde(default)]
    pub stack: Vec<String>,
    #[serde(default)]
    pub current: u32,
}

/// Opcodes this SDK emits. The server parses the string form; there is no `StepNotFound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpCode {
    StepRun,
    StepError,
    StepFailed,
    StepPlanned,
    Sleep,
}

/// One element of a 206 answer (`GeneratorOpcode` on the server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Hashed step id.
    pub id: String,
    pub op: OpCode,
    /// Legacy field: the user step id, or the duration for `Sleep`.
    pub name: String,
    #[serde(rename = "displayName")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opts: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Serialized error: `{name, message, stack?}` for step and function failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub name: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// Formats a duration the way Go's `time.ParseDuration` reads it (`1h30m`, `45s`, `1s500ms`).
pub fn go_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    let millis = duration.subsec_millis();
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// Serde helper for `Duration` fields that go on the wire as Go durations.
pub(crate) fn serialize_go_duration<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&go_duration(*duration))
}

/// Serde helper for optional Go-duration fields.
pub(crate) fn serialize_opt_go_duration<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => serializer.serialize_str(&go_duration(*d)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_go_syntax() {
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(go_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn executor_request_bodies_parse() {
        let body = r#"{"ctx":{"attempt":2,"disable_immediate_execution":false,"env":"","fn_id":"f","max_attempts":5,"qi_id":"","run_id":"r","stack":{"current":0,"stack":[]},"step_id":"step","use_api":false},"defers":{},"event":{"data":{"msg":"hi"},"id":"e","name":"test/hello","ts":1705586500000,"user":{}},"events":[],"steps":{"a":null,"b":{"data":1}},"use_api":false,"version":-1}"#;
        let req: CallRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.ctx.attempt, 2);
        assert_eq!(req.ctx.max_attempts, Some(5));
        assert!(req.steps.contains_key("a"));
        assert_eq!(req.event.unwrap().name, "test/hello");
    }

    #[test]
    fn ops_serialize_with_the_server_field_names() {
        let op = Op {
            id: "h".into(),
            op: OpCode::StepPlanned,
            name: "n".into(),
            display_name: "n".into(),
            opts: None,
            data: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"id":"h","op":"StepPlanned","name":"n","displayName":"n"}"#
        );
    }
}
