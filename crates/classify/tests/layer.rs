//! ThrottleClassify over mock services: errors wrapped, responses untouched,
//! `poll_ready` forwarded, and no body text in `Display`, `Debug` or the
//! captured tracing output.

use std::error::Error as _;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceExt};
use tower_bedrock_classify::{
    ClassifyHttpLayer, HttpError, NoModel, ThrottleClassifyLayer, classify_parts,
};
use tower_bedrock_core::{
    Classified, ErrorClass, ModelRequest, ThrottleKind, TokenDemand, UnavailableKind,
};

const SECRET: &str = "SECRET-PROMPT-TEXT";

#[derive(Clone)]
struct Ask(String);
impl ModelRequest for Ask {
    fn model_id(&self) -> &str {
        &self.0
    }
    fn set_model_id(&mut self, m: &str) {
        self.0 = m.into();
    }
    fn token_demand(&self) -> TokenDemand {
        TokenDemand::default()
    }
}

#[derive(Debug)]
struct WireError {
    status: u16,
    code: &'static str,
    message: String,
}
impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}
impl std::error::Error for WireError {}

fn wire_classifier(e: &WireError) -> tower_bedrock_core::Classification {
    classify_parts(Some(e.status), Some(e.code), Some(&e.message))
}

/// A mock that counts `poll_ready` calls, can be told to be pending, and
/// fails or answers by the model id.
#[derive(Clone, Default)]
struct Mock {
    ready_polls: Arc<Mutex<u32>>,
    pending: Arc<Mutex<bool>>,
}

impl Service<Ask> for Mock {
    type Response = String;
    type Error = WireError;
    type Future = std::future::Ready<Result<String, WireError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        *self.ready_polls.lock().unwrap() += 1;
        if *self.pending.lock().unwrap() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: Ask) -> Self::Future {
        std::future::ready(if req.0 == "ok" {
            Ok(format!("answer with {SECRET}"))
        } else {
            Err(WireError {
                status: 429,
                code: "ThrottlingException",
                message: format!("Too many tokens, please wait before trying again. {SECRET}"),
            })
        })
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn wraps_errors_passes_responses_and_leaks_no_body() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = Mock::default();
    let mut svc = ThrottleClassifyLayer::new()
        .classifier(wire_classifier)
        .layer(mock.clone());

    let ok = svc
        .ready()
        .await
        .unwrap()
        .call(Ask("ok".into()))
        .await
        .unwrap();
    assert_eq!(
        ok,
        format!("answer with {SECRET}"),
        "responses pass untouched"
    );

    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Ask("anthropic.claude-3-haiku-20240307-v1:0".into()))
        .await
        .unwrap_err();
    assert_eq!(
        err.classification().class,
        ErrorClass::Throttled(ThrottleKind::TokenRate)
    );
    assert_eq!(err.inner().unwrap().status, 429, "inner error kept");
    assert!(err.source().is_some(), "source() exposes the inner error");
    assert!(!err.to_string().contains(SECRET));
    assert!(!format!("{err:?}").contains(SECRET));
    assert!(err.to_string().contains("ThrottlingException"));

    let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("bedrock call failed"), "{logged}");
    assert!(
        logged.contains("anthropic.claude-3-haiku-20240307-v1:0"),
        "{logged}"
    );
    assert!(logged.contains("token_rate"), "{logged}");
    assert!(!logged.contains(SECRET), "no body in traces: {logged}");
    assert_eq!(*mock.ready_polls.lock().unwrap(), 2);
}

#[tokio::test]
async fn poll_ready_is_forwarded_including_pending() {
    let mock = Mock::default();
    *mock.pending.lock().unwrap() = true;
    let mut svc = ThrottleClassifyLayer::new()
        .classifier(wire_classifier)
        .model_of(NoModel)
        .layer(mock.clone());
    let waker = futures_noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Service::<Ask>::poll_ready(&mut svc, &mut cx).is_pending());
    *mock.pending.lock().unwrap() = false;
    assert!(matches!(
        Service::<Ask>::poll_ready(&mut svc, &mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(*mock.ready_polls.lock().unwrap(), 2);
}

fn futures_noop_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

#[tokio::test]
async fn http_statuses_become_classified_errors() {
    let inner = tower::service_fn(|req: http::Request<()>| async move {
        let status = if req.uri().path().ends_with("/converse") {
            503
        } else {
            200
        };
        let resp = http::Response::builder()
            .status(status)
            .header(
                "x-amzn-ErrorType",
                "ServiceUnavailableException:http://internal",
            )
            .header("x-amzn-RequestId", "req-1")
            .body(SECRET.to_owned())
            .unwrap();
        Ok::<_, std::io::Error>(resp)
    });
    let mut svc = ClassifyHttpLayer::new().layer(inner);
    let req = http::Request::post("/model/anthropic.claude-3-haiku/converse")
        .body(())
        .unwrap();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Service)
    );
    assert_eq!(err.classification().request_id.as_deref(), Some("req-1"));
    match err.inner().unwrap() {
        HttpError::Status(r) => assert_eq!(r.body(), SECRET, "the response is kept whole"),
        HttpError::Transport(_) => panic!("expected a status error"),
    }
    assert!(!err.to_string().contains(SECRET));

    let ok = http::Request::post("/model/x/count-tokens")
        .body(())
        .unwrap();
    let resp = svc.ready().await.unwrap().call(ok).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn transport_errors_are_network() {
    let inner = tower::service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<()>, _>(std::io::Error::other("reset"))
    });
    let mut svc = ClassifyHttpLayer::new().layer(inner);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Unavailable(UnavailableKind::Network)
    );
}
