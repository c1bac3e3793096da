//! What the classifiers read from response headers: the request id and a
//! `Retry-After` hint, sanitized and bounded.

use std::time::Duration;

/// Header carrying the AWS request id.
pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
/// Header carrying the error code on restJson1 errors.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-errortype";

/// Request ids are UUID-like; keep only such characters, bounded.
pub(crate) fn sanitize_request_id(id: &str) -> Option<String> {
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// `Retry-After` as delta-seconds (HTTP dates are not used by Bedrock and
/// are ignored). Bounded to one day.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("99999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn request_ids_are_sanitized() {
        assert_eq!(
            sanitize_request_id("0a1b-2c3d<body>").as_deref(),
            Some("0a1b-2c3dbody")
        );
        assert_eq!(sanitize_request_id("{}"), None);
    }
}
