//! Classifying `tower::timeout`'s errors.
//!
//! `tower::timeout::Timeout` answers with a [`BoxError`]: either its own
//! [`Elapsed`] or the inner service's error, boxed. Put under
//! `ThrottleClassify` (through [`TimeoutClassifier`]) it becomes a
//! `ClassifiedError<BoxError>`, which is a `std::error::Error` like any
//! other and composes with `tower::buffer` above.

use std::error::Error;

use tower::timeout::error::Elapsed;
use tower_bedrock_core::{BoxError, Classification, ErrorClass, UnavailableKind};

use crate::classifier::Classifier;

/// The code of a [`Elapsed`] classification.
pub const ELAPSED_CODE: &str = "Elapsed";

/// How deep [`classify_boxed`] looks into a source chain.
const MAX_CHAIN: usize = 8;

/// A `tower::timeout` deadline: `Unavailable(Network)` with code
/// [`ELAPSED_CODE`], like the SDK's own attempt timeouts (retried with
/// backoff, a failure for the breaker, never a client error).
pub fn classify_elapsed(_: &Elapsed) -> Classification {
    Classification::new(ErrorClass::Unavailable(UnavailableKind::Network)).with_code(ELAPSED_CODE)
}

/// Classifies a boxed error by what it is, looking through its source
/// chain (at most a few levels): a `tower::timeout` [`Elapsed`], or (with
/// the `sdk` feature) the `SdkError` of a Bedrock Runtime operation.
/// `None` when it is none of these.
pub fn classify_boxed(error: &(dyn Error + 'static)) -> Option<Classification> {
    let mut next = Some(error);
    for _ in 0..MAX_CHAIN {
        let e = next?;
        if let Some(elapsed) = e.downcast_ref::<Elapsed>() {
            return Some(classify_elapsed(elapsed));
        }
        #[cfg(feature = "sdk")]
        if let Some(c) = sdk::classify_operation_error(e) {
            return Some(c);
        }
        next = e.source();
    }
    None
}

/// A [`Classifier`] of [`BoxError`]s, for `ThrottleClassify` over a
/// `tower::timeout::Timeout` (or anything else answering boxed errors):
/// [`classify_boxed`] first, then the `other` classifier (by default,
/// [`ErrorClass::Unknown`]).
///
/// ```
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_bedrock_classify::{NoModel, ThrottleClassifyLayer, TimeoutClassifier};
/// use tower_bedrock_core::{BoxError, ClassifiedError, ErrorClass, UnavailableKind};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = service_fn(|_: &'static str| async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     Ok::<_, BoxError>("late")
/// });
/// let svc = ServiceBuilder::new()
///     // Buffer (like anything needing `Into<BoxError>`) takes the
///     // classified errors: they are `std::error::Error`s.
///     .buffer(16)
///     .layer(
///         ThrottleClassifyLayer::new()
///             .classifier(TimeoutClassifier::new())
///             .model_of(NoModel),
///     )
///     .timeout(Duration::from_secs(5))
///     .service(slow);
/// let err = svc.oneshot("hello").await.unwrap_err();
/// let err = err.downcast_ref::<ClassifiedError<BoxError>>().unwrap();
/// assert_eq!(err.class(), ErrorClass::Unavailable(UnavailableKind::Network));
/// assert_eq!(err.to_string(), "bedrock call failed: unavailable (network): Elapsed");
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutClassifier<C = Unclassified> {
    other: C,
}

impl TimeoutClassifier {
    /// Classifies timeouts and (with the `sdk` feature) the SDK's errors;
    /// anything else is [`ErrorClass::Unknown`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C> TimeoutClassifier<C> {
    /// Classifies the errors [`classify_boxed`] does not know with `other`
    /// (a closure `Fn(&BoxError) -> Classification` works).
    pub fn or_else<C2: Classifier<BoxError>>(self, other: C2) -> TimeoutClassifier<C2> {
        TimeoutClassifier { other }
    }
}

impl<C: Classifier<BoxError>> Classifier<BoxError> for TimeoutClassifier<C> {
    fn classify(&self, error: &BoxError) -> Classification {
        let e: &(dyn Error + 'static) = &**error;
        classify_boxed(e).unwrap_or_else(|| self.other.classify(error))
    }
}

/// Classifies every error as [`ErrorClass::Unknown`]: the default fallback
/// of [`TimeoutClassifier`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Unclassified;

impl<E> Classifier<E> for Unclassified {
    fn classify(&self, _: &E) -> Classification {
        Classification::new(ErrorClass::Unknown)
    }
}

#[cfg(feature = "sdk")]
mod sdk {
    use std::error::Error;

    use aws_sdk_bedrockruntime::operation::converse::ConverseError;
    use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
    use aws_sdk_bedrockruntime::operation::count_tokens::CountTokensError;
    use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
    use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError;
    use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_types::event_stream::RawMessage;
    use tower_bedrock_core::Classification;

    use crate::sdk::{classify_sdk_error, classify_stream_error};

    /// The `SdkError` of one of the operations `tower-bedrock-sdk` serves,
    /// or of their event streams.
    pub(super) fn classify_operation_error(e: &(dyn Error + 'static)) -> Option<Classification> {
        macro_rules! try_op {
            ($($t:ty),*) => {$(
                if let Some(e) = e.downcast_ref::<SdkError<$t, HttpResponse>>() {
                    return Some(classify_sdk_error(e));
                }
            )*};
        }
        macro_rules! try_stream {
            ($($t:ty),*) => {$(
                if let Some(e) = e.downcast_ref::<SdkError<$t, RawMessage>>() {
                    return Some(classify_stream_error(e));
                }
            )*};
        }
        try_op!(
            ConverseError,
            ConverseStreamError,
            InvokeModelError,
            InvokeModelWithResponseStreamError,
            CountTokensError
        );
        try_stream!(ConverseStreamOutputError, ResponseStreamError);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn network(code: &str) -> Classification {
        Classification::new(ErrorClass::Unavailable(UnavailableKind::Network))
            .with_code(code.to_owned())
    }

    #[test]
    fn elapsed_is_a_network_failure_even_deep_in_a_chain() {
        let elapsed: BoxError = Elapsed::new().into();
        assert_eq!(
            TimeoutClassifier::new().classify(&elapsed),
            network(ELAPSED_CODE)
        );
        let wrapped: BoxError = Wrapper(Elapsed::new().into()).into();
        assert_eq!(
            TimeoutClassifier::new().classify(&wrapped),
            network(ELAPSED_CODE)
        );
    }

    #[test]
    fn other_errors_go_to_the_fallback_classifier() {
        let other: BoxError = "something else".into();
        assert_eq!(
            TimeoutClassifier::new().classify(&other).class,
            ErrorClass::Unknown
        );
        let c = TimeoutClassifier::new().or_else(|_: &BoxError| network("Mine"));
        assert_eq!(c.classify(&other), network("Mine"));
        // A chain deeper than the bound is not followed to its end.
        let mut deep: BoxError = Elapsed::new().into();
        for _ in 0..MAX_CHAIN {
            deep = Wrapper(deep).into();
        }
        assert_eq!(classify_boxed(&*deep), None);
    }

    #[cfg(feature = "sdk")]
    #[test]
    fn boxed_sdk_errors_keep_their_classes() {
        use aws_sdk_bedrockruntime::operation::converse::ConverseError;
        use aws_sdk_bedrockruntime::types::error::ThrottlingException;
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        use tower_bedrock_core::ThrottleKind;

        let err = ConverseError::ThrottlingException(
            ThrottlingException::builder()
                .message("Too many tokens, please wait before trying again.")
                .meta(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("ThrottlingException")
                        .message("Too many tokens, please wait before trying again.")
                        .build(),
                )
                .build(),
        );
        let raw = Response::new(StatusCode::try_from(429).unwrap(), SdkBody::empty());
        let boxed: BoxError = SdkError::service_error(err, raw).into();
        assert_eq!(
            TimeoutClassifier::new().classify(&boxed).class,
            ErrorClass::Throttled(ThrottleKind::TokenRate)
        );
    }
}
