use std::any::Any;
use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The `source()` of a [`ClassifiedError`] built by
/// [`ClassifiedError::with_source`]: the inner error itself.
type AsError<E> = fn(&E) -> &(dyn Error + 'static);

use crate::{Classification, ErrorClass, LocalRejection};

/// An error that knows its [`Classification`].
///
/// Every layer of the stack reads errors through this trait. The optional
/// [`ErrorContext`] is where outer layers note what they did (attempts made,
/// why retrying stopped, fallback targets tried); error types that have no
/// room for it keep the default methods and the notes are simply not kept.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` does not say how Bedrock failed (it is not `Classified`)",
    label = "the layers of tower-bedrock read every error through `Classified`",
    note = "put `ThrottleClassifyLayer` (tower-bedrock-classify) below this layer to wrap the inner errors in `ClassifiedError`, or implement `Classified` for `{Self}`",
    note = "layers that refuse requests (budget, breaker, retry deadline) also need `{Self}: From<Rejection>`, which `ClassifiedError<E>` implements"
)]
pub trait Classified {
    /// The failure's class and metadata.
    fn classification(&self) -> &Classification;

    /// Notes added by the layers this error passed through, if this error
    /// type keeps them.
    fn context(&self) -> Option<&ErrorContext> {
        None
    }

    /// Mutable access to the notes, if this error type keeps them.
    fn context_mut(&mut self) -> Option<&mut ErrorContext> {
        None
    }
}

impl<T: Classified + ?Sized> Classified for Box<T> {
    fn classification(&self) -> &Classification {
        (**self).classification()
    }
    fn context(&self) -> Option<&ErrorContext> {
        (**self).context()
    }
    fn context_mut(&mut self) -> Option<&mut ErrorContext> {
        (**self).context_mut()
    }
}

/// Why the retry layer stopped retrying and returned this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryStop {
    /// The error's class is not retried by the policy.
    NotRetryable,
    /// The policy's maximum number of attempts was reached.
    MaxAttempts,
    /// The shared retry budget was empty.
    BudgetExhausted,
    /// The next wait would have crossed the call's deadline.
    Deadline,
}

impl RetryStop {
    /// Stable metric label.
    pub const fn label(&self) -> &'static str {
        match self {
            RetryStop::NotRetryable => "not_retryable",
            RetryStop::MaxAttempts => "max_attempts",
            RetryStop::BudgetExhausted => "budget_exhausted",
            RetryStop::Deadline => "deadline",
        }
    }
}

/// One target a fallback layer tried, and how it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The model or inference profile id.
    pub target: String,
    /// The class of its failure.
    pub class: ErrorClass,
}

/// What the layers of the stack noted on an error on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorContext {
    /// Attempts made by the retry layer (0 when no retry layer saw it).
    pub attempts: u32,
    /// Why the retry layer stopped, when one saw the error.
    pub retry_stop: Option<RetryStop>,
    /// Of the `attempts`, how many were refused by an open circuit breaker
    /// below the retry layer and waited out (nothing reached Bedrock;
    /// these cost no retry budget).
    pub circuit_waits: u32,
    /// Fallback targets tried before this error was returned, in order.
    pub tried: Vec<Tried>,
}

/// A refusal by a layer of this stack: the request never reached Bedrock.
///
/// Layers that refuse requests (budget, breaker, retry deadline) create
/// their error with `E::from(Rejection)`, so the whole stack keeps one error
/// type. [`ClassifiedError`] implements `From<Rejection>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    classification: Classification,
    key: Option<String>,
}

impl Rejection {
    /// A rejection of the given kind.
    pub fn new(kind: LocalRejection) -> Self {
        Rejection {
            classification: Classification::new(ErrorClass::Local(kind)),
            key: None,
        }
    }

    /// Says when trying again may succeed.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.classification.retry_after = Some(after);
        self
    }

    /// Names what was refused: a model id or a budget key. Never put a
    /// prompt or other request content here.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The kind of rejection.
    pub fn kind(&self) -> LocalRejection {
        match self.classification.class {
            ErrorClass::Local(kind) => kind,
            // Constructed only through `new`.
            _ => LocalRejection::BudgetExhausted,
        }
    }

    /// The model id or budget key, when given.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// When trying again may succeed, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.classification.retry_after
    }
}

impl Classified for Rejection {
    fn classification(&self) -> &Classification {
        &self.classification
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind() {
            LocalRejection::BudgetExhausted => "token budget exhausted",
            LocalRejection::RequestTooLarge => "request larger than the whole token budget",
            LocalRejection::CircuitOpen => "circuit breaker open",
            LocalRejection::RetryBudgetExhausted => "retry budget exhausted",
            LocalRejection::DeadlineExceeded => "deadline exceeded",
        };
        f.write_str(what)?;
        if let Some(key) = &self.key {
            write!(f, " for {key}")?;
        }
        if let Some(after) = self.classification.retry_after {
            write!(f, "; retry after {after:?}")?;
        }
        Ok(())
    }
}

impl Error for Rejection {}

/// The error type the stack shares: an inner error (or a local rejection)
/// with its [`Classification`] and the [`ErrorContext`] outer layers add.
///
/// `Display` names the class and the code, never a body or a message.
///
/// It is a [`std::error::Error`] for any inner error with `Debug` and
/// `Display`, `BoxError` included (so `tower::timeout` below the stack and
/// `tower::buffer` above it compose). [`Error::source`] returns:
///
/// - for a local rejection, the [`Rejection`];
/// - the inner error itself when it was wrapped by
///   [`with_source`](Self::with_source) (the SDK classifiers do), or when
///   it is a boxed `dyn Error` (`BoxError`): its own source chain and
///   `downcast_ref` work;
/// - otherwise a view of the inner error with its `Display` and `Debug`
///   (reach the typed error through [`inner`](Self::inner)).
///
/// The error is one pointer wide (its parts live in one box), so results
/// stay small on the success path.
pub struct ClassifiedError<E> {
    repr: Box<Repr<E>>,
}

struct Repr<E> {
    classification: Classification,
    context: ErrorContext,
    source: Source<E>,
    as_error: Option<AsError<E>>,
}

enum Source<E> {
    Inner(Shown<E>),
    Local(Rejection),
}

/// The inner error as stored: a `dyn Error` view of any `Debug + Display`
/// type, for [`Error::source`].
struct Shown<E>(E);

impl<E: fmt::Debug> fmt::Debug for Shown<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Display> fmt::Display for Shown<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Debug + fmt::Display> Error for Shown<E> {}

/// A boxed `dyn Error` as itself, when `e` is one.
fn boxed_error<E: 'static>(e: &E) -> Option<&(dyn Error + 'static)> {
    let any: &dyn Any = e;
    if let Some(b) = any.downcast_ref::<Box<dyn Error + Send + Sync>>() {
        return Some(&**b);
    }
    if let Some(b) = any.downcast_ref::<Box<dyn Error + Send>>() {
        return Some(&**b);
    }
    if let Some(b) = any.downcast_ref::<Box<dyn Error>>() {
        return Some(&**b);
    }
    None
}

impl<E> ClassifiedError<E> {
    /// Wraps an inner error with its classification. Any type works; see
    /// the type's docs for what [`Error::source`] returns, and
    /// [`with_source`](Self::with_source) for inner errors that are
    /// `Error`s themselves.
    pub fn new(inner: E, classification: Classification) -> Self {
        ClassifiedError {
            repr: Box::new(Repr {
                classification,
                context: ErrorContext::default(),
                source: Source::Inner(Shown(inner)),
                as_error: None,
            }),
        }
    }

    /// Wraps an inner error that is an [`Error`]: [`Error::source`] then
    /// returns it as itself (its source chain and `downcast_ref` work).
    pub fn with_source(inner: E, classification: Classification) -> Self
    where
        E: Error + 'static,
    {
        let mut e = Self::new(inner, classification);
        e.repr.as_error = Some(|e| e);
        e
    }

    /// The inner error, unless this is a local rejection.
    pub fn inner(&self) -> Option<&E> {
        match &self.repr.source {
            Source::Inner(e) => Some(&e.0),
            Source::Local(_) => None,
        }
    }

    /// Takes the inner error, unless this is a local rejection.
    pub fn into_inner(self) -> Option<E> {
        match self.repr.source {
            Source::Inner(e) => Some(e.0),
            Source::Local(_) => None,
        }
    }

    /// The local rejection, if this is one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match &self.repr.source {
            Source::Local(r) => Some(r),
            Source::Inner(_) => None,
        }
    }

    /// The class of the failure.
    pub fn class(&self) -> ErrorClass {
        self.repr.classification.class
    }

    /// Maps the inner error, keeping classification and context. (The
    /// result's [`Error::source`] is as for [`new`](Self::new).)
    pub fn map_inner<F, T>(self, f: F) -> ClassifiedError<T>
    where
        F: FnOnce(E) -> T,
    {
        let Repr {
            classification,
            context,
            source,
            as_error: _,
        } = *self.repr;
        ClassifiedError {
            repr: Box::new(Repr {
                classification,
                context,
                source: match source {
                    Source::Inner(e) => Source::Inner(Shown(f(e.0))),
                    Source::Local(r) => Source::Local(r),
                },
                as_error: None,
            }),
        }
    }
}

impl<E> From<Rejection> for ClassifiedError<E> {
    fn from(rejection: Rejection) -> Self {
        ClassifiedError {
            repr: Box::new(Repr {
                classification: rejection.classification.clone(),
                context: ErrorContext::default(),
                source: Source::Local(rejection),
                as_error: None,
            }),
        }
    }
}

impl<E> Classified for ClassifiedError<E> {
    fn classification(&self) -> &Classification {
        &self.repr.classification
    }
    fn context(&self) -> Option<&ErrorContext> {
        Some(&self.repr.context)
    }
    fn context_mut(&mut self) -> Option<&mut ErrorContext> {
        Some(&mut self.repr.context)
    }
}

impl<E> fmt::Display for ClassifiedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let repr = &*self.repr;
        match &repr.source {
            Source::Local(r) => write!(f, "{r}")?,
            Source::Inner(_) => write!(f, "bedrock call failed: {}", repr.classification)?,
        }
        if repr.context.attempts > 1 {
            write!(f, " (after {} attempts)", repr.context.attempts)?;
        }
        if !repr.context.tried.is_empty() {
            let n = repr.context.tried.len();
            let targets = if n == 1 { "target" } else { "targets" };
            write!(f, " (tried {n} {targets}:")?;
            for t in &repr.context.tried {
                write!(f, " {}", t.target)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl<E> fmt::Debug for ClassifiedError<E> {
    /// Debug output, like `Display`, carries no body: the inner error is
    /// not formatted because SDK errors may hold raw responses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifiedError")
            .field("classification", &self.repr.classification)
            .field("context", &self.repr.context)
            .field("local", &matches!(self.repr.source, Source::Local(_)))
            .finish()
    }
}

impl<E: fmt::Debug + fmt::Display + 'static> Error for ClassifiedError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.repr.source {
            Source::Inner(e) => Some(match self.repr.as_error {
                Some(as_error) => as_error(&e.0),
                None => boxed_error(&e.0).unwrap_or(e),
            }),
            Source::Local(r) => Some(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThrottleKind;

    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner with a secret body")
        }
    }
    impl Error for Inner {}

    #[test]
    fn wraps_and_exposes_source_without_printing_it() {
        let c = Classification::new(ErrorClass::Throttled(ThrottleKind::RequestRate))
            .with_code("ThrottlingException")
            .with_status(429);
        let mut e = ClassifiedError::new(Inner, c);
        e.context_mut().unwrap().attempts = 3;
        let shown = e.to_string();
        assert_eq!(
            shown,
            "bedrock call failed: throttled (request rate): ThrottlingException, HTTP 429 (after 3 attempts)"
        );
        assert!(!format!("{e:?}").contains("secret"));
        assert_eq!(e.source().unwrap().to_string(), "inner with a secret body");
        assert!(e.inner().is_some());
    }

    #[test]
    fn display_counts_the_targets_tried_in_words() {
        let tried = |target: &str| Tried {
            target: target.to_owned(),
            class: ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
        };
        let mut e = ClassifiedError::new(Inner, throttled());
        e.context_mut().unwrap().tried.push(tried("model-a"));
        assert!(e.to_string().ends_with(" (tried 1 target: model-a)"), "{e}");
        e.context_mut().unwrap().tried.push(tried("model-b"));
        assert!(
            e.to_string()
                .ends_with(" (tried 2 targets: model-a model-b)"),
            "{e}"
        );
    }

    type BoxError = Box<dyn Error + Send + Sync>;

    fn throttled() -> Classification {
        Classification::new(ErrorClass::Throttled(ThrottleKind::RequestRate))
    }

    fn boxed<E: Error + Send + Sync + 'static>(e: E) -> BoxError {
        e.into()
    }

    #[test]
    fn over_a_box_error_it_is_an_error_that_boxes_and_keeps_the_chain() {
        #[derive(Debug)]
        struct Outer(Inner);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = ClassifiedError::new(boxed(Outer(Inner)), throttled());
        // What `tower::buffer` and `?` into a BoxError need.
        let as_box: BoxError = boxed(e);
        let e = as_box
            .downcast_ref::<ClassifiedError<BoxError>>()
            .expect("boxed as itself");
        // source() is the boxed error itself: downcast and chain work.
        let source = e.source().unwrap();
        assert!(source.downcast_ref::<Outer>().is_some());
        assert!(source.source().unwrap().downcast_ref::<Inner>().is_some());
    }

    #[test]
    fn with_source_exposes_the_inner_error_as_itself() {
        let e = ClassifiedError::with_source(Inner, throttled());
        assert!(e.source().unwrap().downcast_ref::<Inner>().is_some());
        // `new` over the same type: a view with the same text.
        let e = ClassifiedError::new(Inner, throttled());
        assert!(e.source().unwrap().downcast_ref::<Inner>().is_none());
        assert_eq!(e.source().unwrap().to_string(), "inner with a secret body");
        // Mapping keeps the class; the new inner error is a view again.
        let e = ClassifiedError::with_source(Inner, throttled()).map_inner(|_| "mapped");
        assert_eq!(e.source().unwrap().to_string(), "mapped");
        assert_eq!(e.class(), ErrorClass::Throttled(ThrottleKind::RequestRate));
    }

    #[test]
    fn any_debug_display_inner_error_makes_an_error() {
        fn is_error<T: Error + Send + Sync + 'static>(_: &T) {}
        let e = ClassifiedError::new(String::from("plain text error"), throttled());
        is_error(&e);
        assert_eq!(e.source().unwrap().to_string(), "plain text error");
        let r: ClassifiedError<String> = Rejection::new(LocalRejection::CircuitOpen).into();
        assert!(r.source().unwrap().downcast_ref::<Rejection>().is_some());
    }

    #[test]
    fn is_one_pointer_wide() {
        assert_eq!(
            std::mem::size_of::<ClassifiedError<[u8; 512]>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn rejection_converts_into_the_stack_error() {
        let r = Rejection::new(LocalRejection::CircuitOpen)
            .with_key("anthropic.claude-3-haiku")
            .with_retry_after(Duration::from_secs(2));
        assert_eq!(r.kind(), LocalRejection::CircuitOpen);
        let e: ClassifiedError<Inner> = r.into();
        assert_eq!(e.class(), ErrorClass::Local(LocalRejection::CircuitOpen));
        assert_eq!(e.classification().retry_after, Some(Duration::from_secs(2)));
        assert!(e.inner().is_none());
        assert_eq!(
            e.to_string(),
            "circuit breaker open for anthropic.claude-3-haiku; retry after 2s"
        );
        let mapped = e.map_inner(|_| 5u8);
        assert!(mapped.rejection().is_some());
    }
}
