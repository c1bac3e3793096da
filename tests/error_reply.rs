//! The integrations' mapping of the stack's errors (features `axum` and
//! `tonic`): status and code by class, `Retry-After` and
//! `grpc-retry-pushback-ms`, JSON bodies without message text, the caller's
//! deadline from its headers, and a throttle the stack cannot absorb
//! reaching an HTTP caller as a 429 within the caller's limit.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_bedrock::ErrorReply;
use tower_bedrock::caller::{CallerDeadline, call_within};
use tower_bedrock::classify::{ThrottleClassifyLayer, classify_parts};
use tower_bedrock::core::deadline::call_deadline;
use tower_bedrock::core::{
    CallReport, Classification, ClassifiedError, ClientKind, Clock, ErrorClass, LocalRejection,
    ModelRequest, Rejection, ReportsUsage, ThrottleKind, TokenDemand, UnavailableKind, Usage,
};

/// A prompt fragment and a Bedrock message that must never reach a caller.
const SECRET: &str = "my-secret-prompt-text";

/// A Bedrock-like wire error whose message echoes the input.
#[derive(Debug, Clone)]
struct WireError {
    status: u16,
    code: &'static str,
    message: String,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for WireError {}

fn wire(status: u16, code: &'static str, message: &str) -> ClassifiedError<WireError> {
    let e = WireError {
        status,
        code,
        message: format!("{message} ({SECRET})"),
    };
    let c =
        classify_parts(Some(e.status), Some(e.code), Some(&e.message)).with_request_id("req-1234");
    ClassifiedError::new(e, c)
}

/// 45 s into a minute, for the next-window fallback.
fn clock_at_45s() -> Clock {
    Clock::starting_at(Duration::from_secs(1_700_000_000 - 1_700_000_000 % 60 + 45))
}

#[test]
fn every_class_has_its_http_status_and_grpc_code() {
    use tonic::Code;
    let table: &[(ErrorClass, u16, Code)] = &[
        (
            ErrorClass::Throttled(ThrottleKind::TokenRate),
            429,
            Code::ResourceExhausted,
        ),
        (
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
            429,
            Code::ResourceExhausted,
        ),
        (ErrorClass::QuotaExceeded, 429, Code::ResourceExhausted),
        (
            ErrorClass::Local(LocalRejection::BudgetExhausted),
            429,
            Code::ResourceExhausted,
        ),
        (
            ErrorClass::Unavailable(UnavailableKind::Service),
            503,
            Code::Unavailable,
        ),
        (
            ErrorClass::Unavailable(UnavailableKind::Network),
            503,
            Code::Unavailable,
        ),
        (
            ErrorClass::Local(LocalRejection::CircuitOpen),
            503,
            Code::Unavailable,
        ),
        (
            ErrorClass::Local(LocalRejection::RetryBudgetExhausted),
            503,
            Code::Unavailable,
        ),
        (ErrorClass::ModelTimeout, 504, Code::DeadlineExceeded),
        (
            ErrorClass::Local(LocalRejection::DeadlineExceeded),
            504,
            Code::DeadlineExceeded,
        ),
        (
            ErrorClass::Local(LocalRejection::RequestTooLarge),
            413,
            Code::InvalidArgument,
        ),
        (
            ErrorClass::Client(ClientKind::Validation),
            400,
            Code::InvalidArgument,
        ),
        (
            ErrorClass::Client(ClientKind::Other),
            400,
            Code::InvalidArgument,
        ),
        (
            ErrorClass::Client(ClientKind::ModelError),
            422,
            Code::InvalidArgument,
        ),
        (
            ErrorClass::Client(ClientKind::AccessDenied),
            403,
            Code::PermissionDenied,
        ),
        (
            ErrorClass::Client(ClientKind::NotFound),
            404,
            Code::NotFound,
        ),
        (ErrorClass::Client(ClientKind::Conflict), 409, Code::Aborted),
        (ErrorClass::Unknown, 502, Code::Unknown),
    ];
    for (class, http, grpc) in table {
        let reply = ErrorReply::from_classification(
            &Classification::new(*class),
            &Clock::system(),
            Duration::from_secs(60),
        );
        assert_eq!(reply.http_status(), *http, "{class}");
        assert_eq!(reply.grpc_code(), *grpc, "{class}");
        let response = reply.clone().into_response();
        assert_eq!(response.status().as_u16(), *http, "{class}");
        assert_eq!(tonic::Status::from(reply).code(), *grpc, "{class}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttle_without_hint_comes_back_at_the_next_window() {
    let err = wire(429, "ThrottlingException", "Too many tokens, please wait");
    assert_eq!(err.class(), ErrorClass::Throttled(ThrottleKind::TokenRate));
    let reply = ErrorReply::from_error_in(&err, &clock_at_45s(), Duration::from_secs(60));
    assert_eq!(reply.retry_after(), Some(Duration::from_secs(15)));

    let response = reply.clone().into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "15");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body = std::str::from_utf8(&body).unwrap();
    assert!(!body.contains(SECRET), "{body}");
    assert!(!body.contains("Too many tokens"), "{body}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"error": {
            "class": "throttled",
            "kind": "token_rate",
            "code": "ThrottlingException",
            "request_id": "req-1234",
            "retry_after_seconds": 15,
        }})
    );

    let status = tonic::Status::from(reply);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "15000"
    );
    assert!(status.metadata().get("retry-after").is_none());
    assert!(!status.message().contains(SECRET), "{}", status.message());
    assert!(
        status.message().starts_with("throttled/token_rate: "),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("ThrottlingException") && status.message().contains("req-1234"),
        "{}",
        status.message()
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_keeps_its_own_hint() {
    // The budget's hint is 2.2 s: the header rounds up, the pushback keeps
    // the milliseconds.
    let shed: ClassifiedError<WireError> = Rejection::new(LocalRejection::BudgetExhausted)
        .with_retry_after(Duration::from_millis(2200))
        .with_key("anthropic.claude-3-haiku")
        .into();
    let reply = ErrorReply::from_error_in(&shed, &clock_at_45s(), Duration::from_secs(60));
    assert_eq!(reply.retry_after(), Some(Duration::from_millis(2200)));
    let response = ErrorReply::from(shed).into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    let status = tonic::Status::from(reply);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "2200"
    );

    let open = Rejection::new(LocalRejection::CircuitOpen).with_retry_after(Duration::from_secs(7));
    let response = ErrorReply::from(open).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
}

#[test]
fn a_deadline_refusal_that_knows_when_room_comes_back_is_a_shed() {
    // The budget had no room before the call's deadline: come back in 44 s.
    let shed = Rejection::new(LocalRejection::DeadlineExceeded)
        .with_retry_after(Duration::from_secs(44))
        .with_key("anthropic.claude-3-haiku");
    let reply = ErrorReply::from(shed);
    assert_eq!(reply.http_status(), 429);
    assert_eq!(reply.grpc_code(), tonic::Code::ResourceExhausted);
    let response = reply.into_response();
    assert_eq!(response.headers()[header::RETRY_AFTER], "44");
    // Out of time, with nothing to say about later: a timeout.
    let late = ErrorReply::from(Rejection::new(LocalRejection::DeadlineExceeded));
    assert_eq!(late.http_status(), 504);
    assert_eq!(late.grpc_code(), tonic::Code::DeadlineExceeded);
    assert_eq!(late.retry_after(), None);
}

#[tokio::test(start_paused = true)]
async fn errors_that_waiting_does_not_fix_get_no_retry_hint() {
    for err in [
        wire(400, "ValidationException", "Malformed input request"),
        wire(
            400,
            "ServiceQuotaExceededException",
            "daily tokens quota exceeded",
        ),
        wire(408, "ModelTimeoutException", "Model timed out"),
    ] {
        let reply = ErrorReply::from_error_in(&err, &clock_at_45s(), Duration::from_secs(60));
        assert_eq!(reply.retry_after(), None, "{err}");
        let response = reply.clone().into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["error"]["retry_after_seconds"],
            serde_json::Value::Null
        );
        assert!(!String::from_utf8_lossy(&body).contains(SECRET));
        let status = tonic::Status::from(reply);
        // gRFC A6: a negative pushback tells the client not to retry.
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "-1"
        );
    }
}

#[derive(serde::Deserialize)]
struct Ask {
    prompt: String,
}

async fn validate(body: Result<axum::Json<Ask>, JsonRejection>) -> Result<String, ErrorReply> {
    let axum::Json(ask) = body?;
    if ask.prompt.trim().is_empty() {
        return Err(ErrorReply::client(ClientKind::Validation, "EmptyPrompt"));
    }
    Ok("ok".into())
}

async fn send(app: &Router, content_type: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut req = Request::post("/ask");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    if status != StatusCode::OK {
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn bad_json_is_answered_in_json_without_echoing_the_body() {
    let app = Router::new().route("/ask", post(validate));
    let json = Some("application/json");
    let (status, body) = send(&app, json, &format!("{{\"prompt\": \"{SECRET}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["class"], "client");
    assert_eq!(v["error"]["code"], "InvalidJson");
    assert!(!body.contains(SECRET), "{body}");

    // A field of the wrong type: serde's message would quote it.
    let (status, body) = send(&app, json, &format!("{{\"prompt\": [\"{SECRET}\"]}}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("InvalidJsonData") && !body.contains(SECRET),
        "{body}"
    );

    let (status, body) = send(&app, None, "{\"prompt\": \"hi\"}").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body.contains("MissingJsonContentType"), "{body}");

    let (status, body) = send(&app, json, "{\"prompt\": \"  \"}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("EmptyPrompt"), "{body}");

    let (status, body) = send(&app, json, "{\"prompt\": \"hi\"}").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[test]
fn the_callers_timeout_comes_from_its_headers() {
    let policy = CallerDeadline::new()
        .default_limit(Duration::from_secs(20))
        .max_limit(Duration::from_secs(25))
        .margin(Duration::ZERO);

    let mut headers = HeaderMap::new();
    assert_eq!(
        tower_bedrock::axum::caller_deadline(&policy, &headers),
        Ok(Some(Duration::from_secs(20)))
    );
    headers.insert("x-request-timeout-ms", "1500".parse().unwrap());
    assert_eq!(
        tower_bedrock::axum::caller_deadline(&policy, &headers),
        Ok(Some(Duration::from_millis(1500)))
    );
    headers.insert("x-request-timeout-ms", "soon".parse().unwrap());
    let reply = tower_bedrock::axum::caller_deadline(&policy, &headers).unwrap_err();
    assert_eq!(reply.http_status(), 400);
    assert_eq!(reply.code(), Some("InvalidTimeout"));

    // What a tonic client sends for a 3 s timeout.
    let mut request = tonic::Request::new(());
    request.set_timeout(Duration::from_secs(3));
    assert_eq!(
        tower_bedrock::tonic::caller_deadline(&policy, request.metadata()).unwrap(),
        Some(Duration::from_secs(3))
    );
    request.set_timeout(Duration::from_secs(600));
    assert_eq!(
        tower_bedrock::tonic::caller_deadline(&policy, request.metadata()).unwrap(),
        Some(Duration::from_secs(25))
    );
    request
        .metadata_mut()
        .insert("grpc-timeout", "3 seconds".parse().unwrap());
    let status = tower_bedrock::tonic::caller_deadline(&policy, request.metadata()).unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(start_paused = true)]
async fn call_within_sets_the_deadline_and_answers_by_it() {
    // The service sees the deadline in `call` and never answers.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let mut svc = service_fn(move |_: ()| {
        *seen2.lock().unwrap() = call_deadline();
        std::future::pending::<Result<(), ClassifiedError<WireError>>>()
    });
    let start = Instant::now();
    let err = call_within(&mut svc, (), Some(Duration::from_secs(4)))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Local(LocalRejection::DeadlineExceeded)
    );
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(*seen.lock().unwrap(), Some(start + Duration::from_secs(4)));

    // No time left: refused without calling.
    let calls = Arc::new(AtomicU32::new(0));
    let calls2 = calls.clone();
    let mut svc = service_fn(move |_: ()| {
        calls2.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, ClassifiedError<WireError>>(()) }
    });
    let err = call_within(&mut svc, (), Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Local(LocalRejection::DeadlineExceeded)
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    // No limit: just the call.
    call_within(&mut svc, (), None).await.unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

// ---- the preset stack behind an axum handler --------------------------

#[derive(Clone)]
struct Chat {
    model: String,
    report: Option<CallReport>,
}

impl ModelRequest for Chat {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn set_model_id(&mut self, id: &str) {
        self.model = id.to_owned();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 20,
            max_output_tokens: Some(100),
        }
    }
    fn set_max_output_tokens(&mut self, _n: u64) {}
    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

struct Answer;

impl ReportsUsage for Answer {
    fn usage(&self) -> Option<Usage> {
        Some(Usage::new(20, 10))
    }
}

type Stack = tower_bedrock::BoxCloneSyncService<Chat, Answer, ClassifiedError<WireError>>;

/// The preset stack (its default 210 s retry deadline) over a model that
/// answers every call with a token-rate throttle.
fn throttled_stack(calls: Arc<AtomicU32>) -> Stack {
    let bedrock = service_fn(move |_: Chat| {
        calls.fetch_add(1, Ordering::Relaxed);
        async {
            Err::<Answer, _>(WireError {
                status: 429,
                code: "ThrottlingException",
                message: "Too many tokens, please wait before trying again.".into(),
            })
        }
    });
    tower_bedrock::stack()
        .classify(ThrottleClassifyLayer::new().classifier(|e: &WireError| {
            classify_parts(Some(e.status), Some(e.code), Some(&e.message))
        }))
        .sync_service(bedrock)
        .unwrap()
}

#[derive(Clone)]
struct App {
    stack: Stack,
    /// `None`: the handler calls the stack without a caller deadline.
    policy: Option<CallerDeadline>,
}

async fn chat(State(app): State<App>, headers: HeaderMap) -> Result<String, ErrorReply> {
    let req = Chat {
        model: "anthropic.claude-3-haiku-20240307-v1:0".into(),
        report: None,
    };
    let mut stack = app.stack.clone();
    match &app.policy {
        Some(policy) => {
            let limit = tower_bedrock::axum::caller_deadline(policy, &headers)?;
            call_within(&mut stack, req, limit).await?;
        }
        None => {
            stack.ready().await?.call(req).await?;
        }
    }
    Ok("answered".into())
}

async fn post_chat(app: App, timeout_ms: Option<&str>) -> (StatusCode, HeaderMap, Duration) {
    let router = Router::new().route("/chat", post(chat)).with_state(app);
    let mut req = Request::post("/chat");
    if let Some(ms) = timeout_ms {
        req = req.header("x-request-timeout-ms", ms);
    }
    let start = Instant::now();
    let response = router
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    (
        response.status(),
        response.headers().clone(),
        start.elapsed(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_throttle_the_stack_cannot_absorb_reaches_the_caller_as_429_in_time() {
    // Without a caller deadline the stack keeps retrying for minutes (the
    // gateway examples' behaviour this integration fixes).
    let calls = Arc::new(AtomicU32::new(0));
    let app = App {
        stack: throttled_stack(calls.clone()),
        policy: None,
    };
    let (status, _, took) = post_chat(app, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(took > Duration::from_secs(30), "took {took:?}");

    // The default caller deadline: the 429 with Retry-After within 25 s.
    let calls = Arc::new(AtomicU32::new(0));
    let app = App {
        stack: throttled_stack(calls.clone()),
        policy: Some(CallerDeadline::new()),
    };
    let (status, headers, took) = post_chat(app.clone(), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(took <= Duration::from_secs(25), "took {took:?}");
    let after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after), "Retry-After {after}");
    assert!(calls.load(Ordering::Relaxed) >= 1);

    // A caller that waits 3 s hears back within 3 s.
    let (status, headers, took) = post_chat(app.clone(), Some("3000")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(took <= Duration::from_secs(3), "took {took:?}");
    assert!(headers.contains_key(header::RETRY_AFTER));

    // A nonsensical timeout is the caller's error.
    let (status, _, _) = post_chat(app, Some("-5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
