//! Per-call options read from the request: a [`CallReport`] to record
//! attempts into, and a deadline overriding the layer's.

use std::time::Duration;

use tower_bedrock_core::{CallReport, ModelRequest};

/// What the retry layer takes from one request before calling.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PerCall {
    /// Where to count the attempts of this call (the caller keeps a clone
    /// and reads it afterwards, on success and on failure alike).
    pub report: Option<CallReport>,
    /// This call's maximum total time, replacing the layer's deadline.
    /// `Some(Duration::ZERO)` refuses the call with
    /// `Local(DeadlineExceeded)` without sending it.
    pub deadline: Option<Duration>,
}

impl PerCall {
    /// Nothing: no report, the layer's deadline.
    pub const fn new() -> Self {
        PerCall {
            report: None,
            deadline: None,
        }
    }

    /// Sets the report.
    #[must_use]
    pub fn report(mut self, report: Option<CallReport>) -> Self {
        self.report = report;
        self
    }

    /// Sets the deadline override.
    #[must_use]
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }
}

/// Reads [`PerCall`] options from a request.
///
/// Set one with
/// [`QuotaAlignedRetryLayerBuilder::call_options`](crate::QuotaAlignedRetryLayerBuilder::call_options).
/// Ready-made: [`NoCallOptions`] (the default), [`ModelRequestReport`]
/// (the report a [`ModelRequest`] carries), and any closure
/// `Fn(&Req) -> PerCall`:
///
/// ```
/// use std::time::Duration;
/// use tower_bedrock_core::CallReport;
/// use tower_bedrock_retry::{PerCall, QuotaAlignedRetryLayer};
///
/// #[derive(Clone)]
/// struct Job { report: Option<CallReport>, deadline: Option<Duration> }
///
/// let layer = QuotaAlignedRetryLayer::builder()
///     .call_options(|job: &Job| PerCall::new().report(job.report.clone()).deadline(job.deadline))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub trait CallOptions<Req> {
    /// The options of this request.
    fn per_call(&self, req: &Req) -> PerCall;
}

/// No per-call options: no report, the layer's deadline for every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCallOptions;

impl<Req> CallOptions<Req> for NoCallOptions {
    #[inline]
    fn per_call(&self, _req: &Req) -> PerCall {
        PerCall::new()
    }
}

/// Records attempts into the [`CallReport`] a [`ModelRequest`] carries
/// ([`ModelRequest::report`]); the layer's deadline for every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelRequestReport;

impl<Req: ModelRequest> CallOptions<Req> for ModelRequestReport {
    #[inline]
    fn per_call(&self, req: &Req) -> PerCall {
        PerCall::new().report(req.report().cloned())
    }
}

impl<Req, F> CallOptions<Req> for F
where
    F: Fn(&Req) -> PerCall,
{
    #[inline]
    fn per_call(&self, req: &Req) -> PerCall {
        self(req)
    }
}
