//! axum integration (feature `axum`): the stack's errors as HTTP answers,
//! the caller's deadline from its headers.
//!
//! - [`ErrorReply`] is an [`IntoResponse`]: the status from the error's
//!   class (see the table on [`ErrorReply`]), `Retry-After` in seconds when
//!   the caller may come back, and a JSON body naming the failure, never
//!   the prompt or an error message:
//!
//!   ```json
//!   {"error": {"class": "throttled", "kind": "token_rate", "code": "ThrottlingException",
//!              "request_id": "5c0c...", "retry_after_seconds": 12}}
//!   ```
//!
//!   (`code`, `request_id` and `retry_after_seconds` are `null` when not
//!   known.) `?` turns the stack's [`ClassifiedError`](crate::core::ClassifiedError)
//!   into one, and axum's [`JsonRejection`] too, so bad JSON gets a JSON
//!   answer as well.
//! - [`caller_deadline`] reads the caller's time limit (`grpc-timeout`,
//!   `x-request-timeout-ms`) through a [`CallerDeadline`] policy, for
//!   [`call_within`](crate::caller::call_within).
//!
//! ```
//! use axum::extract::rejection::JsonRejection;
//! use axum::http::HeaderMap;
//! use axum::{Json, Router, extract::State, routing::post};
//! use tower_bedrock::ErrorReply;
//! use tower_bedrock::caller::{CallerDeadline, call_within};
//! use tower_bedrock::core::{ClassifiedError, ClientKind};
//! use tower_bedrock::sdk::aws_sdk_bedrockruntime::operation::converse::ConverseInput;
//! use tower_bedrock::sdk::aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
//! use tower_bedrock::sdk::{ConverseRequest, ConverseResponse, ConverseSdkError};
//!
//! type Stack = tower_bedrock::BoxCloneSyncService<
//!     ConverseRequest,
//!     ConverseResponse,
//!     ClassifiedError<ConverseSdkError>,
//! >;
//!
//! #[derive(serde::Deserialize)]
//! struct Ask { prompt: String }
//!
//! async fn ask(
//!     State(stack): State<Stack>,
//!     headers: HeaderMap,
//!     body: Result<Json<Ask>, JsonRejection>,
//! ) -> Result<String, ErrorReply> {
//!     let Json(ask) = body?; // bad JSON: a 400 with a JSON body
//!     if ask.prompt.trim().is_empty() {
//!         return Err(ErrorReply::client(ClientKind::Validation, "EmptyPrompt"));
//!     }
//!     let invalid = |_| ErrorReply::client(ClientKind::Validation, "InvalidRequest");
//!     let message = Message::builder()
//!         .role(ConversationRole::User)
//!         .content(ContentBlock::Text(ask.prompt))
//!         .build()
//!         .map_err(invalid)?;
//!     let input = ConverseInput::builder()
//!         .model_id("anthropic.claude-3-5-haiku-20241022-v1:0")
//!         .messages(message)
//!         .build()
//!         .map_err(invalid)?;
//!     // The caller's x-request-timeout-ms (or 25 s) bounds the whole call.
//!     let limit = tower_bedrock::axum::caller_deadline(&CallerDeadline::new(), &headers)?;
//!     let answer = call_within(&mut stack.clone(), ConverseRequest::new(input), limit).await?;
//!     Ok(answer.text())
//! }
//!
//! fn app(stack: Stack) -> Router {
//!     Router::new().route("/ask", post(ask)).with_state(stack)
//! }
//! ```

use std::time::Duration;

use ::axum::extract::rejection::JsonRejection;
use ::axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use ::axum::response::{IntoResponse, Response};
use tower_bedrock_core::ClientKind;

use crate::caller::CallerDeadline;
use crate::reply::ErrorReply;

impl ErrorReply {
    /// The JSON body of the HTTP answer (see the [module docs](self)).
    pub fn json_body(&self) -> String {
        serde_json::json!({
            "error": {
                "class": self.class().label(),
                "kind": self.class().kind_label(),
                "code": self.code(),
                "request_id": self.request_id(),
                "retry_after_seconds": self.retry_after_secs(),
            }
        })
        .to_string()
    }
}

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json_body(),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ErrorReply {
    /// `Client(Validation)` with axum's status (400, 415, 413, 422) and a
    /// code naming what was wrong: `InvalidJson`, `InvalidJsonData`,
    /// `MissingJsonContentType` or `UnreadableBody`. serde's message is
    /// dropped (it can quote the body).
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => "InvalidJson",
            JsonRejection::JsonDataError(_) => "InvalidJsonData",
            JsonRejection::MissingJsonContentType(_) => "MissingJsonContentType",
            _ => "UnreadableBody",
        };
        ErrorReply::client(ClientKind::Validation, code)
            .with_http_status(rejection.status().as_u16())
    }
}

/// The caller's time limit from its request headers (see
/// [`CallerDeadline::resolve`]); a header that is not a valid timeout is a
/// `400` with code `InvalidTimeout`.
pub fn caller_deadline(
    policy: &CallerDeadline,
    headers: &HeaderMap,
) -> Result<Option<Duration>, ErrorReply> {
    Ok(policy.resolve(|name| {
        headers
            .get(name)
            // Present but not visible ASCII: invalid, not absent.
            .map(|v| v.to_str().unwrap_or(""))
    })?)
}
