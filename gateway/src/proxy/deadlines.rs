//! The caller's deadline on its way through the proxy: read from its `grpc-timeout`
//! (capped), passed on to the upstream as what is left of it, and a timeout answered as
//! DEADLINE_EXCEEDED.

use std::time::Duration;

use tonic::Status;

use super::refused;

/// An upstream's "Timeout expired" CANCELLED (tonic's answer when the `grpc-timeout` it
/// was given runs out) is the caller's deadline: DEADLINE_EXCEEDED.
pub(super) fn deadline_not_cancel<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let cancelled = headers.get("grpc-status").is_some_and(|s| s == "1");
    let timeout = headers
        .get("grpc-message")
        .is_some_and(|m| m.as_bytes().starts_with(b"Timeout"));
    if cancelled && timeout {
        headers.insert("grpc-status", http::HeaderValue::from_static("4"));
    }
    response
}

pub(super) fn deadline_exceeded(upstream: &str, timeout: Duration) -> Status {
    refused(Status::deadline_exceeded(format!(
        "{upstream} did not answer within {timeout:?}"
    )))
}

/// The caller's deadline from its headers, capped at `cap` (and `cap` when it sent none).
pub fn deadline(headers: &http::HeaderMap, cap: Duration) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(cap, |t| t.min(cap))
}

/// `grpc-timeout` is digits and a unit: H, M, S, m (ms), u (µs), n (ns).
fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pub(super) fn encode_grpc_timeout(timeout: Duration) -> String {
    // At most 8 digits; milliseconds cover every deadline the gateway allows.
    format!("{}m", timeout.as_millis().clamp(1, 99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("12Q"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(encode_grpc_timeout(Duration::from_secs(3)), "3000m");
        assert_eq!(encode_grpc_timeout(Duration::ZERO), "1m");
    }
}
