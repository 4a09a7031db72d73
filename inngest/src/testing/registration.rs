//! The dev server's registration rules (reference §2.3).

use std::time::Duration;

use serde_json::{json, Value};

/// Parses a Go duration string (`1h30m`, `1.5s`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn duration_field(
    value: Option<&Value>,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    let text = value?.as_str();
    match text.and_then(parse_go_duration) {
        Some(duration) => Some(duration),
        None => {
            problems.push(format!("{what} is not a valid duration: {value:?}"));
            None
        }
    }
}

fn valid_cron(cron: &str) -> bool {
    let cron = cron.trim();
    let cron = match cron
        .strip_prefix("TZ=")
        .or_else(|| cron.strip_prefix("CRON_TZ="))
    {
        Some(rest) => rest.split_once(' ').map_or("", |(_, c)| c),
        None => cron,
    };
    if cron.starts_with('@') {
        return true;
    }
    let fields: Vec<&str> = cron.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c))
        })
}

/// The dev server's registration rules (reference §2.3) that a payload can break; returns
/// one message per problem.
pub fn validate_registration(payload: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let app = payload
        .get("appName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if app.is_empty() {
        problems.push("App ID required".to_owned());
    }
    let url_ok = payload
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| reqwest::Url::parse(u).ok())
        .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
    if !url_ok {
        problems.push("url must be an absolute http(s) URL".to_owned());
    }
    let Some(functions) = payload.get("functions").and_then(Value::as_array) else {
        problems.push("functions must be an array".to_owned());
        return problems;
    };
    for function in functions {
        validate_function(function, &mut problems);
    }
    problems
}

fn validate_function(function: &Value, problems: &mut Vec<String>) {
    let id = function
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut problem = |message: String| problems.push(format!("{id}: {message}"));
    if id.is_empty() {
        problem("function id is required".into());
    }
    if function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        problem("A function name is required".into());
    }
    match function.get("steps").and_then(Value::as_object) {
        Some(steps) if steps.len() == 1 => {
            for step in steps.values() {
                let url = step
                    .pointer("/runtime/url")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let scheme_ok = reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "ws" | "wss"));
                if !scheme_ok {
                    problem(format!("step URL {url:?} must be http(s) or ws(s)"));
                }
                if let Some(attempts) = step.pointer("/retries/attempts") {
                    if attempts.as_u64().is_none_or(|a| a > 20) {
                        problem(format!("retries must be between 0 and 20, got {attempts}"));
                    }
                }
            }
        }
        _ => problem("functions must have exactly one step".into()),
    }
    let triggers = function
        .get("triggers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if triggers.len() > 10 {
        problem("at most 10 triggers are allowed".into());
    }
    for (i, trigger) in triggers.iter().enumerate() {
        if triggers[..i].contains(trigger) {
            problem(format!("duplicate trigger {trigger}"));
        }
        match (
            trigger.get("event").and_then(Value::as_str),
            trigger.get("cron").and_then(Value::as_str),
        ) {
            (Some(event), None) if !event.is_empty() && event.len() <= 255 => {}
            (None, Some(cron)) if cron.len() <= 255 && valid_cron(cron) => {}
            _ => problem(format!("invalid trigger {trigger}")),
        }
        if let Some(expression) = trigger.get("expression") {
            if expression.as_str().is_none_or(|e| e.trim().is_empty()) {
                problem(format!("invalid trigger expression {expression}"));
            }
        }
    }
    let mut flow = Vec::new();
    validate_flow_control(function, &mut flow);
    for message in flow {
        problem(message);
    }
}

fn validate_flow_control(function: &Value, problems: &mut Vec<String>) {
    let limits: Vec<Value> = match function.get("concurrency") {
        None => Vec::new(),
        Some(Value::Number(n)) => vec![json!({ "limit": n })],
        Some(Value::Array(items)) => items.clone(),
        Some(object @ Value::Object(_)) => vec![object.clone()],
        Some(other) => {
            problems.push(format!("invalid concurrency {other}"));
            Vec::new()
        }
    };
    if limits.len() > 2 {
        problems.push("at most 2 concurrency limits are allowed".into());
    }
    for limit in &limits {
        if limit.get("limit").and_then(Value::as_u64).is_none() {
            problems.push(format!(
                "concurrency limit must be a non-negative integer: {limit}"
            ));
        }
        let scope = limit.get("scope").and_then(Value::as_str).unwrap_or("fn");
        if !matches!(scope, "fn" | "env" | "account") {
            problems.push(format!("invalid concurrency scope {scope:?}"));
        }
        if scope != "fn" && limit.get("key").is_none() {
            problems.push("env and account concurrency scopes require a key".into());
        }
    }
    if let Some(rate) = function.get("rateLimit") {
        if rate
            .get("limit")
            .and_then(Value::as_u64)
            .is_none_or(|l| l == 0)
        {
            problems.push("rateLimit.limit must be positive".into());
        }
        if duration_field(rate.get("period"), "rateLimit.period", problems)
            .is_some_and(|d| d > Duration::from_secs(86_400))
        {
            problems.push("rateLimit.period must be at most 24h".into());
        }
    }
    if let Some(throttle) = function.get("throttle") {
        duration_field(throttle.get("period"), "throttle.period", problems);
    }
    if let Some(debounce) = function.get("debounce") {
        let period = duration_field(debounce.get("period"), "debounce.period", problems);
        if period.is_some_and(|p| p < Duration::from_secs(1) || p > Duration::from_secs(7 * 86_400))
        {
            problems.push("debounce.period must be between 1s and 7d".into());
        }
        duration_field(debounce.get("timeout"), "debounce.timeout", problems);
    }
    if let Some(cancel) = function.get("cancel").and_then(Value::as_array) {
        if cancel.len() > 5 {
            problems.push("at most 5 cancellation rules are allowed".into());
        }
        for rule in cancel {
            if rule
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                problems.push("cancel.event is required".into());
            }
            duration_field(rule.get("timeout"), "cancel.timeout", problems);
        }
    }
    if let Some(timeouts) = function.get("timeouts") {
        duration_field(timeouts.get("start"), "timeouts.start", problems);
        duration_field(timeouts.get("finish"), "timeouts.finish", problems);
    }
    if let Some(singleton) = function.get("singleton") {
        let mode = singleton
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(mode, "skip" | "cancel") {
            problems.push(format!("invalid singleton mode {mode:?}"));
        }
    }
    if let Some(priority) = function.get("priority") {
        if !priority.get("run").is_some_and(Value::is_string) {
            problems.push("priority.run must be a CEL string".into());
        }
    }
    if let Some(key) = function.get("idempotency") {
        if !key.is_string() {
            problems.push("idempotency must be a CEL string".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_go_duration("1s500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_go_duration("5 minutes"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn crons_need_five_fields() {
        assert!(valid_cron("0 2 * * *"));
        assert!(valid_cron("TZ=Europe/Paris 0 2 * * *"));
        assert!(valid_cron("@daily"));
        assert!(!valid_cron("0 2 * *"));
        assert!(!valid_cron("every day"));
    }
}
