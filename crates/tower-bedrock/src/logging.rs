//! Safe logging: keep prompts, completions and credentials out of your logs
//! even at `RUST_LOG=trace`.
//!
//! Nothing in this workspace logs request or response content. The AWS SDK
//! does, at levels a user turns on to debug a throttle:
//!
//! | target | level | what it writes |
//! |---|---|---|
//! | `aws_smithy_runtime::client::orchestrator` | TRACE | the HTTP request with its body (the prompt), the response and its body (the completion), the operation's output, the resolved identity (the access key id) |
//! | `aws_sigv4` | TRACE | the request being signed (its body) and the signing parameters (the access key id) |
//! | `aws_smithy_http::event_stream` | TRACE | every event-stream message with its payload (each streamed piece of the completion) |
//! | `aws_runtime::content_encoding` | TRACE | chunked request body data |
//! | `aws_config::profile::credentials` | INFO | the credentials loaded from a profile (the access key id) |
//! | `aws_config::credential_process` | TRACE | the credential process command line, unredacted |
//!
//! [`SAFE_LOG_FILTER`] is an `EnvFilter` directive string turning these
//! targets off. Append it to your own directives
//! (`format!("{your_directives},{SAFE_LOG_FILTER}")`), or let
//! [`safe_env_filter`] do it. An `EnvFilter` alone is not airtight, though:
//! a directive naming a more specific target (`aws_sigv4::sign=trace`)
//! wins over `aws_sigv4=off`, and a span directive (`[handler]=trace`)
//! enables every event inside the span whatever its target.
//! [`SafeLogFilter`] closes both holes: it wraps any `EnvFilter` and drops
//! the silenced targets before the `EnvFilter` is asked, so no directive
//! can bring them back. [`try_init`] installs a `fmt` subscriber with it,
//! reading `RUST_LOG`; the examples start with it.
//!
//! Applications that log through the `log` crate instead (`env_logger`...)
//! receive the SDK's events as `log` records when `tracing`'s `log`
//! feature is on: filter the same [`SILENCED_TARGETS`] in that logger
//! (`RUST_LOG=trace,aws_sigv4=off,...` with `env_logger`, which has no span
//! directives), or route `log` into `tracing` and use [`SafeLogFilter`].
//!
//! ```
//! use tracing_subscriber::prelude::*;
//! use tower_bedrock::logging::SafeLogFilter;
//!
//! let filter = SafeLogFilter::new(tracing_subscriber::EnvFilter::new("trace,[handler]=trace"));
//! let subscriber = tracing_subscriber::registry()
//!     .with(filter)
//!     .with(tracing_subscriber::fmt::layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     // The SDK's payload-logging events are never enabled here.
//!     assert!(!tracing::enabled!(target: "aws_smithy_http::event_stream::receiver", tracing::Level::TRACE));
//!     assert!(tracing::enabled!(target: "my_app", tracing::Level::TRACE));
//! });
//! ```

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::{self, Context, Layer};
use tracing_subscriber::registry::LookupSpan;

macro_rules! silenced {
    ($first:literal $(, $target:literal)* $(,)?) => {
        /// The `tracing` targets that log request or response content or
        /// credentials (see the [module docs](self)); each target covers
        /// its submodules.
        pub const SILENCED_TARGETS: &[&str] = &[$first $(, $target)*];

        /// `EnvFilter` directives turning every target of
        /// [`SILENCED_TARGETS`] off at every level:
        /// `"aws_smithy_runtime::client::orchestrator=off,aws_sigv4=off,..."`.
        /// Put them after your own directives; see the
        /// [module docs](self) for what an `EnvFilter` cannot guarantee.
        pub const SAFE_LOG_FILTER: &str = concat!($first, "=off" $(, ",", $target, "=off")*);
    };
}

silenced!(
    "aws_smithy_runtime::client::orchestrator",
    "aws_sigv4",
    "aws_smithy_http::event_stream",
    "aws_runtime::content_encoding",
    "aws_config::profile::credentials",
    "aws_config::credential_process",
);

/// Whether events of `target` are silenced (it is one of
/// [`SILENCED_TARGETS`] or inside one).
pub fn is_silenced(target: &str) -> bool {
    SILENCED_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// An `EnvFilter` from `directives` (`RUST_LOG` syntax) with
/// [`SAFE_LOG_FILTER`] appended. Directives of yours that name a silenced
/// target or one inside it are dropped, since the more specific directive
/// would win. Span directives still enable the silenced targets inside
/// their spans; use [`SafeLogFilter`] to be safe from those too.
pub fn safe_env_filter(directives: &str) -> Result<EnvFilter, ParseError> {
    let mut kept: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let target = d.split(['[', '=']).next().unwrap_or_default().trim();
            target.is_empty() || !is_silenced(target)
        })
        .collect();
    kept.push(SAFE_LOG_FILTER);
    EnvFilter::builder().parse(kept.join(","))
}

/// A filter that never enables the [`SILENCED_TARGETS`] and asks an inner
/// [`EnvFilter`] about everything else, so no directive of the inner
/// filter (a more specific target, a span directive) can enable them.
///
/// Use it as a global filter layer
/// (`registry().with(SafeLogFilter::new(env)).with(fmt::layer())`) or as a
/// per-layer filter (`fmt::layer().with_filter(SafeLogFilter::new(env))`).
#[derive(Debug)]
pub struct SafeLogFilter {
    inner: EnvFilter,
}

impl SafeLogFilter {
    /// Wraps `inner`.
    pub fn new(inner: EnvFilter) -> Self {
        SafeLogFilter { inner }
    }

    /// From `RUST_LOG`, or `default` (`RUST_LOG` syntax) when it is unset
    /// or does not parse.
    pub fn from_env_or(default: &str) -> Self {
        let inner = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(default))
            .unwrap_or_else(|_| EnvFilter::new("warn"));
        SafeLogFilter { inner }
    }

    /// The wrapped filter.
    pub fn inner(&self) -> &EnvFilter {
        &self.inner
    }
}

impl<S> Layer<S> for SafeLogFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_silenced(metadata.target()) {
            return Interest::never();
        }
        Layer::<S>::register_callsite(&self.inner, metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.inner)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        !is_silenced(metadata.target()) && Layer::<S>::enabled(&self.inner, metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_new_span(&self.inner, attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        Layer::<S>::on_record(&self.inner, id, values, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_enter(&self.inner, id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_exit(&self.inner, id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_close(&self.inner, id, ctx)
    }
}

impl<S> layer::Filter<S> for SafeLogFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, ctx: &Context<'_, S>) -> bool {
        !is_silenced(metadata.target()) && layer::Filter::<S>::enabled(&self.inner, metadata, ctx)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_silenced(metadata.target()) {
            return Interest::never();
        }
        layer::Filter::<S>::callsite_enabled(&self.inner, metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        layer::Filter::<S>::max_level_hint(&self.inner)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        layer::Filter::<S>::on_new_span(&self.inner, attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        layer::Filter::<S>::on_record(&self.inner, id, values, ctx)
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        layer::Filter::<S>::on_enter(&self.inner, id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        layer::Filter::<S>::on_exit(&self.inner, id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        layer::Filter::<S>::on_close(&self.inner, id, ctx)
    }
}

/// Installs a global `fmt` subscriber (to stderr) filtered by `RUST_LOG`
/// (or `default` when unset) through a [`SafeLogFilter`]. Fails when a
/// global subscriber is already set.
pub fn try_init(default: &str) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(SafeLogFilter::from_env_or(default))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_themselves_and_their_submodules_only() {
        assert!(is_silenced("aws_sigv4"));
        assert!(is_silenced("aws_sigv4::http_request::sign"));
        assert!(is_silenced("aws_smithy_http::event_stream::receiver"));
        assert!(!is_silenced("aws_sigv4x"));
        assert!(!is_silenced("aws_smithy_runtime::client::retries"));
        assert!(!is_silenced("tower_bedrock_retry"));
    }

    #[test]
    fn the_directive_string_lists_every_target_off() {
        let directives: Vec<&str> = SAFE_LOG_FILTER.split(',').collect();
        assert_eq!(directives.len(), SILENCED_TARGETS.len());
        for (d, t) in directives.iter().zip(SILENCED_TARGETS) {
            assert_eq!(*d, format!("{t}=off"));
        }
        // It parses as an EnvFilter on its own and after other directives.
        EnvFilter::builder().parse(SAFE_LOG_FILTER).unwrap();
        EnvFilter::builder()
            .parse(format!("info,{SAFE_LOG_FILTER}"))
            .unwrap();
    }

    #[test]
    fn safe_env_filter_drops_directives_reenabling_a_silenced_target() {
        let f = safe_env_filter("debug, aws_sigv4::http_request=trace ,my_app=trace").unwrap();
        let s = f.to_string();
        assert!(!s.contains("aws_sigv4::http_request"), "{s}");
        assert!(s.contains("my_app=trace"), "{s}");
        assert!(s.contains("aws_sigv4=off"), "{s}");
        assert!(safe_env_filter("my_app=loud").is_err());
    }
}
