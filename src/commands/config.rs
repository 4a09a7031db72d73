//! `config`: the effective settings by their documented names, secrets redacted.

use serde_json::{json, Map, Value};

use super::Output;
use crate::settings::Settings;

pub fn config(settings: &Settings, out: Output) -> Value {
    let shown = settings.documented();
    let width = shown.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in &shown {
        out.line(format!("{key:<width$}  {value}"));
    }
    let values: Map<String, Value> = shown
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    json!({ "ok": true, "settings": values })
}
