//! Request/response signatures (HMAC-SHA256) and the hashed Bearer key for API calls.
//!
//! Two different derivations of the same signing key are easy to confuse (reference §3):
//! the HMAC key is the prefix-stripped key **as text**, while the Bearer token hashes the
//! **hex-decoded** bytes. Both are kept on [`SigningKey`] so callers never derive them by hand.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance between a signature's timestamp and now, in both directions.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// A signing key (`signkey-<env>-<hex>` or bare hex). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The `signkey-<env>-` prefix, kept to re-attach it to the hashed Bearer token.
    prefix: String,
    /// The key without prefix; used verbatim (as text) as the HMAC key.
    bare: String,
}

/// Why a string is not a usable signing key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSigningKey {
    #[error("signing key is empty")]
    Empty,
    #[error("signing key is not an even-length hex string after its `signkey-<env>-` prefix")]
    NotHex,
}

impl SigningKey {
    /// Parses a key, with or without the `signkey-<env>-` prefix.
    ///
    /// # Errors
    /// The key must be a non-empty, even-length hex string after the prefix: the Bearer token
    /// hashes its decoded bytes, and `inngest start` enforces the same rule on its side.
    pub fn parse(raw: &str) -> Result<Self, InvalidSigningKey> {
        let raw = raw.trim();
        let (prefix, bare) = split_prefix(raw);
        if bare.is_empty() {
            return Err(InvalidSigningKey::Empty);
        }
        if hex::decode(bare).is_err() {
            return Err(InvalidSigningKey::NotHex);
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            bare: bare.to_owned(),
        })
    }

    /// `t=<ts>&s=<hex hmac(body ++ ts)>`, the header value the executor produces.
    pub fn sign(&self, body: &[u8], timestamp: u64) -> String {
        format!("t={timestamp}&s={}", hex::encode(self.mac(body, timestamp)))
    }

    /// Signs with the current time; used for response signatures.
    pub fn sign_now(&self, body: &[u8]) -> String {
        self.sign(body, unix_now())
    }

    /// `Authorization: Bearer` value for API calls: prefix + sha256(hex-decoded key).
    pub fn bearer(&self) -> String {
        format!("{}{}", self.prefix, self.hash())
    }

    /// SHA-256 of the hex-decoded key, without prefix (introspection `signing_key_hash`).
    pub fn hash(&self) -> String {
        let bytes = hex::decode(&self.bare).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }

    fn mac(&self, body: &[u8], timestamp: u64) -> Vec<u8> {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = HmacSha256::new_from_slice(self.bare.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(body);
        mac.update(timestamp.to_string().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}<redacted>)", self.prefix)
    }
}

/// Splits `^signkey-\w+-` off the key, mirroring the SDKs' regex.
fn split_prefix(raw: &str) -> (&str, &str) {
    let Some(rest) = raw.strip_prefix("signkey-") else {
        return ("", raw);
    };
    let word_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    if word_len > 0 && rest.as_bytes().get(word_len) == Some(&b'-') {
        let cut = "signkey-".len() + word_len + 1;
        (&raw[..cut], &raw[cut..])
    } else {
        ("", raw)
    }
}

/// Why a request signature was rejected; one variant per failure so logs and tests can tell
/// them apart.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no signing key is configured, so signed requests cannot be verified")]
    NoSigningKey,
    #[error("the X-Inngest-Signature header is missing")]
    MissingHeader,
    #[error("the X-Inngest-Signature header is malformed")]
    Malformed,
    #[error("the signature timestamp is {0} s older than allowed")]
    Expired(u64),
    #[error("the signature timestamp is {0} s in the future")]
    FromTheFuture(u64),
    #[error("the signature does not match any configured signing key")]
    Mismatch,
}

/// Which configured key verified a request; the response is signed with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Primary,
    Fallback,
}

/// Parsed `t=…&s=…` header.
struct ParsedHeader {
    timestamp: u64,
    mac: Vec<u8>,
}

fn parse_header(value: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut mac = None;
    for pair in value.trim().split('&') {
        match pair.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("s", s)) => mac = hex::decode(s).ok(),
            _ => {}
        }
    }
    match (timestamp, mac) {
        (Some(timestamp), Some(mac)) if !mac.is_empty() => Ok(ParsedHeader { timestamp, mac }),
        _ => Err(SignatureError::Malformed),
    }
}

/// Verifies `header` over the raw `body` at time `now` (unix seconds), trying the primary key
/// and then the fallback.
///
/// # Errors
/// One [`SignatureError`] variant per failure; the header is checked before any key so a
/// malformed or stale header is reported as such.
pub fn verify(
    body: &[u8],
    header: Option<&str>,
    primary: Option<&SigningKey>,
    fallback: Option<&SigningKey>,
    now: u64,
) -> Result<KeyUsed, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    if primary.is_none() && fallback.is_none() {
        return Err(SignatureError::NoSigningKey);
    }
    let parsed = parse_header(header)?;
    if parsed.timestamp > now && parsed.timestamp - now > MAX_SKEW.as_secs() {
        return Err(SignatureError::FromTheFuture(parsed.timestamp - now));
    }
    if now > parsed.timestamp && now - parsed.timestamp > MAX_SKEW.as_secs() {
        return Err(SignatureError::Expired(now - parsed.timestamp));
    }
    let candidates = [(primary, KeyUsed::Primary), (fallback, KeyUsed::Fallback)];
    for (key, used) in candidates {
        if let Some(key) = key {
            let expected = key.mac(body, parsed.timestamp);
            if bool::from(expected.ct_eq(&parsed.mac)) {
                return Ok(used);
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// SHA-256 hex of a secret, for introspection fields such as `event_key_hash`.
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_stripped_only_when_it_has_the_signkey_shape() {
        assert_eq!(split_prefix("signkey-test-abcd"), ("signkey-test-", "abcd"));
        assert_eq!(split_prefix("signkey-branch-ab"), ("signkey-branch-", "ab"));
        assert_eq!(split_prefix("abcd"), ("", "abcd"));
        assert_eq!(split_prefix("signkey--abcd"), ("", "signkey--abcd"));
    }

    #[test]
    fn keys_must_be_hex() {
        assert_eq!(
            SigningKey::parse("signkey-test-"),
            Err(InvalidSigningKey::Empty)
        );
        assert_eq!(SigningKey::parse("xyz"), Err(InvalidSigningKey::NotHex));
        assert_eq!(SigningKey::parse("abc"), Err(InvalidSigningKey::NotHex));
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let key = SigningKey::parse("signkey-test-0123456789abcdef").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("0123"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let key = SigningKey::parse("abcd").unwrap();
        for header in ["", "t=1", "s=ab", "t=x&s=ab", "t=1&s=zz", "garbage"] {
            assert_eq!(
                verify(b"", Some(header), Some(&key), None, 1),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }
}
