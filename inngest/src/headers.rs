//! Header names and protocol constants, in one place so the wire vocabulary is greppable.

/// Identifies the SDK on every response; the executor rejects 2xx answers without it and
/// dev-server discovery only accepts endpoints that send it. Exactly one `:` (`name:vsemver`).
pub const SDK: &str = "x-inngest-sdk";
/// Request/response HMAC signature, `t=<unix seconds>&s=<hex>`.
pub const SIGNATURE: &str = "x-inngest-signature";
/// Execution request version; `2` enables the executor's parallelism coalescing.
pub const REQ_VERSION: &str = "x-inngest-req-version";
/// `true` makes the executor fail the step/run instead of retrying.
pub const NO_RETRY: &str = "x-inngest-no-retry";
/// Seconds (or a date) the executor waits before the next attempt.
pub const RETRY_AFTER: &str = "retry-after";
/// Informational: the web framework serving the endpoint.
pub const FRAMEWORK: &str = "x-inngest-framework";
/// Branch environment name, forwarded from `INNGEST_ENV`.
pub const ENV: &str = "x-inngest-env";
/// `dev` or `cloud`, sent by the server on sync pings; informational only, never trusted.
pub const SERVER_KIND: &str = "x-inngest-server-kind";
/// Forwarded on `/fn/register` so a dev server refuses a cloud app (and vice versa).
pub const EXPECTED_SERVER_KIND: &str = "x-inngest-expected-server-kind";
/// `out_of_band` on the register call and on the PUT answer.
pub const SYNC_KIND: &str = "x-inngest-sync-kind";
/// Marks responses produced by the SDK (kept even where identifying headers are not).
pub const SDK_HANDLED: &str = "x-inngest-sdk-handled";

/// Request version this SDK speaks.
pub const REQ_VERSION_VALUE: &str = "2";
/// Framework name reported in headers, the registration payload and introspection.
pub const FRAMEWORK_VALUE: &str = "axum";
/// Sync kind value on the wire (underscore, not the spec's hyphen).
pub const SYNC_KIND_OUT_OF_BAND: &str = "out_of_band";
/// Crate version, reported in the SDK header and the registration payload.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Language reported in introspection and the registration payload.
pub const SDK_LANGUAGE: &str = "rust";
/// Introspection schema this SDK implements.
pub const INTROSPECTION_SCHEMA: &str = "2024-05-24";
/// The `stepId` value that means "discover from the top".
pub const DISCOVERY_STEP_ID: &str = "step";
/// Placeholder event key accepted by the dev server when none is configured.
pub const DEV_EVENT_KEY: &str = "NO_EVENT_KEY_SET";

/// `X-Inngest-SDK` and `User-Agent` value: `<repo>:v<semver>` with exactly one `:`.
pub fn sdk_header_value() -> String {
    format!("riveredge/inngest-rs:v{SDK_VERSION}")
}

/// The registration payload's `sdk` field.
pub fn sdk_payload_value() -> String {
    format!("{SDK_LANGUAGE}:v{SDK_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_header_has_exactly_one_colon() {
        assert_eq!(sdk_header_value().matches(':').count(), 1);
        assert!(sdk_header_value().starts_with("riveredge/inngest-rs:v"));
    }
}
