//! [`BedrockService`] restricted to one operation, so the request type is
//! inferred.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use tower_service::Service;

use crate::request::{
    ConverseRequest, ConverseStreamRequest, CountTokensRequest, InvokeModelRequest,
    InvokeModelStreamRequest,
};
use crate::service::BedrockService;

/// A [`BedrockService`] that serves one operation, the one of `Req`.
///
/// [`BedrockService`] implements `Service` for five request types, so
/// `svc.ready()` or `svc.oneshot(req)` over it (or over a stack built on
/// it) must name the request (`ServiceExt::<ConverseRequest>::ready`).
/// An `Operation` implements `Service<Req>` once: everything is inferred.
/// Build one with the per-operation constructors ([`ConverseService::new`],
/// [`ConverseStreamService::new`], [`InvokeModelService::new`],
/// [`InvokeModelStreamService::new`], [`CountTokensService::new`]) or from a
/// configured service with [`Operation::from_service`].
///
/// ```
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tower_bedrock_classify::ThrottleClassifyLayer;
/// use tower_bedrock_sdk::aws_sdk_bedrockruntime::operation::converse::ConverseInput;
/// use tower_bedrock_sdk::aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
/// use tower_bedrock_sdk::{BedrockClientBuilder, ConverseRequest, ConverseService};
/// use tower_bedrock_emulator::{Emulator, EmulatorConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let emulator = Emulator::start(EmulatorConfig::default()).await?;
/// let client = BedrockClientBuilder::new()
///     .region("us-east-1")
/// #   .endpoint_url(emulator.endpoint_url())
/// #   .static_credentials("AKIDEXAMPLE", "secret")
///     .build()
///     .await?;
/// let mut svc = ServiceBuilder::new()
///     .layer(ThrottleClassifyLayer::new())
///     .service(ConverseService::new(client));
/// let input = ConverseInput::builder()
///     .model_id("anthropic.claude-3-haiku-20240307-v1:0")
///     .messages(
///         Message::builder()
///             .role(ConversationRole::User)
///             .content(ContentBlock::Text("Hello".into()))
///             .build()?,
///     )
///     .build()?;
/// // No `ServiceExt::<ConverseRequest>::ready`: there is one request type.
/// let answer = svc.ready().await?.call(ConverseRequest::new(input)).await?;
/// assert!(!answer.text().is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Operation<Req> {
    inner: BedrockService,
    _req: PhantomData<fn(Req)>,
}

/// [`BedrockService`] for Converse only.
pub type ConverseService = Operation<ConverseRequest>;
/// [`BedrockService`] for ConverseStream only.
pub type ConverseStreamService = Operation<ConverseStreamRequest>;
/// [`BedrockService`] for InvokeModel only.
pub type InvokeModelService = Operation<InvokeModelRequest>;
/// [`BedrockService`] for InvokeModelWithResponseStream only.
pub type InvokeModelStreamService = Operation<InvokeModelStreamRequest>;
/// [`BedrockService`] for CountTokens only.
pub type CountTokensService = Operation<CountTokensRequest>;

impl<Req> Operation<Req> {
    /// Restricts `service` (with its settings) to the operation of `Req`.
    pub fn from_service(service: BedrockService) -> Self {
        Operation {
            inner: service,
            _req: PhantomData,
        }
    }

    /// Sets the longest wait for one stream event (see
    /// [`BedrockService::stream_idle_timeout`]).
    #[must_use]
    pub fn stream_idle_timeout(self, timeout: Option<Duration>) -> Self {
        Self::from_service(self.inner.stream_idle_timeout(timeout))
    }

    /// The service serving every operation.
    pub fn into_inner(self) -> BedrockService {
        self.inner
    }
}

macro_rules! constructor {
    ($req:ty, $what:literal) => {
        impl Operation<$req> {
            #[doc = concat!("Serves ", $what, " with `client` (build it with")]
            /// [`BedrockClientBuilder`](crate::BedrockClientBuilder)), with
            /// the default stream idle timeout.
            pub fn new(client: Client) -> Self {
                Self::from_service(BedrockService::new(client))
            }
        }
    };
}

constructor!(ConverseRequest, "Converse");
constructor!(ConverseStreamRequest, "ConverseStream");
constructor!(InvokeModelRequest, "InvokeModel");
constructor!(InvokeModelStreamRequest, "InvokeModelWithResponseStream");
constructor!(CountTokensRequest, "CountTokens");

impl<Req> From<BedrockService> for Operation<Req> {
    fn from(service: BedrockService) -> Self {
        Self::from_service(service)
    }
}

impl<Req> Clone for Operation<Req> {
    fn clone(&self) -> Self {
        Self::from_service(self.inner.clone())
    }
}

impl<Req> fmt::Debug for Operation<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("request", &std::any::type_name::<Req>())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<Req> Service<Req> for Operation<Req>
where
    BedrockService: Service<Req>,
{
    type Response = <BedrockService as Service<Req>>::Response;
    type Error = <BedrockService as Service<Req>>::Error;
    type Future = <BedrockService as Service<Req>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Req>::poll_ready(&mut self.inner, cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}
