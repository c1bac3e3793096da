//! Bedrock's wire format: restJson1 errors and `application/vnd.amazon.eventstream`
//! frames.

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue as HttpHeaderValue, StatusCode};

/// Bedrock's own message texts.
pub mod messages {
    /// TPM exceeded.
    pub const TOO_MANY_TOKENS: &str = "Too many tokens, please wait before trying again.";
    /// RPM exceeded.
    pub const TOO_MANY_REQUESTS: &str = "Too many requests, please wait before trying again.";
    /// Tokens per day exceeded.
    pub const TOO_MANY_TOKENS_PER_DAY: &str =
        "Too many tokens per day, please wait before trying again.";
    /// Connection cap.
    pub const TOO_MANY_CONNECTIONS: &str = "Too many connections, please wait before trying again.";
    /// Generic 503.
    pub const SERVICE_UNAVAILABLE: &str = "Service temporarily unavailable, please try again.";
    /// 500.
    pub const INTERNAL: &str =
        "The system encountered an unexpected error during processing. Try your request again.";
    /// 408.
    pub const MODEL_TIMEOUT: &str =
        "Model has timed out in processing the request. Try your request again.";
    /// ModelNotReady.
    pub const MODEL_NOT_READY: &str =
        "Model is not ready to serve inference requests. Try your request again later.";
    /// 424.
    pub const MODEL_ERROR: &str =
        "The model returned an error while processing the request. Try your request again.";
    /// ServiceQuotaExceeded.
    pub const SERVICE_QUOTA_EXCEEDED: &str = "Your request exceeded the service quota for this model. Request a quota increase or try again later.";
    /// Unknown model id (400 ValidationException).
    pub const INVALID_MODEL_ID: &str = "The provided model identifier is invalid.";
    /// Overload answered as a 503.
    pub const GETTING_THROTTLED: &str = "Model is getting throttled. Try your request again.";
    /// `modelStreamErrorException` inside a stream.
    pub const MODEL_STREAM_ERROR: &str =
        "The model encountered an error while streaming the response. Try your request again.";
    /// Unknown path.
    pub const UNKNOWN_OPERATION: &str = "Unknown operation";
    /// No SigV4 header.
    pub const MISSING_AUTH: &str = "Missing Authentication Token";
    /// Authorization present but not SigV4.
    pub const INVALID_AUTH: &str = "The security token included in the request is invalid.";
    /// Malformed JSON.
    pub const MALFORMED: &str =
        "Malformed input request, please reformat your input and try again.";

    /// "Model … is currently overloaded."
    pub fn overloaded(model: &str) -> String {
        format!("Model {model} is currently overloaded. Please try again later.")
    }
}

/// An error answer as Bedrock sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BedrockError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Members of the error shape besides `message`
    /// (`originalStatusCode`, `resourceName`...).
    pub(crate) fields: Vec<(&'static str, serde_json::Value)>,
}

impl BedrockError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        BedrockError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a member to the error's JSON body.
    pub(crate) fn with(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.fields.push((name, value));
        self
    }

    fn body(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("message".into(), self.message.clone().into());
        for (k, v) in &self.fields {
            m.insert((*k).into(), v.clone());
        }
        serde_json::Value::Object(m).to_string()
    }

    pub(crate) fn throttling(message: impl Into<String>) -> Self {
        Self::new(429, "ThrottlingException", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailableException", message)
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response {
        let mut r = Response::new(Body::from(self.body()));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HttpHeaderValue::from_static("application/json"),
        );
        h.insert("x-amzn-ErrorType", HttpHeaderValue::from_static(self.code));
        if let Ok(v) = HttpHeaderValue::from_str(request_id) {
            h.insert("x-amzn-RequestId", v);
        }
        r
    }

    /// The event-stream `:exception-type` of this error (lower camel case).
    pub(crate) fn exception_type(&self) -> String {
        let mut c = self.code.chars();
        match c.next() {
            Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
            None => String::new(),
        }
    }
}

fn encode(message: &Message) -> Bytes {
    let mut buf = Vec::with_capacity(message.payload().len() + 128);
    // Writing to a Vec cannot fail for frames of sane size.
    if aws_smithy_eventstream::frame::write_message_to(message, &mut buf).is_err() {
        buf.clear();
    }
    Bytes::from(buf)
}

/// An `event` frame.
pub(crate) fn event_frame(event_type: &'static str, payload: String) -> Bytes {
    let m = Message::new(Bytes::from(payload))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    encode(&m)
}

/// An `exception` frame.
pub(crate) fn exception_frame(err: &BedrockError) -> Bytes {
    let m = Message::new(Bytes::from(err.body()))
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String(err.exception_type().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    encode(&m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;

    #[test]
    fn frames_round_trip() {
        let f = event_frame("messageStop", r#"{"stopReason":"end_turn"}"#.into());
        let m = read_message_from(&f[..]).unwrap();
        assert_eq!(&m.payload()[..], br#"{"stopReason":"end_turn"}"#);
        let e = BedrockError::throttling(messages::TOO_MANY_TOKENS);
        assert_eq!(e.exception_type(), "throttlingException");
        let m = read_message_from(&exception_frame(&e)[..]).unwrap();
        let h = aws_smithy_eventstream::smithy::parse_response_headers(&m).unwrap();
        assert_eq!(h.message_type.as_str(), "exception");
        assert_eq!(h.smithy_type.as_str(), "throttlingException");
    }
}
