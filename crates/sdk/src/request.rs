//! Request types: thin wrappers over the SDK's operation inputs that
//! implement [`ModelRequest`] and can carry a [`CallReport`].

use aws_sdk_bedrockruntime::error::BuildError;
use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;
use aws_sdk_bedrockruntime::operation::count_tokens::CountTokensInput;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelInput;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamInput;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ConverseTokensRequest, CountTokensInput as TokensInput, InferenceConfiguration,
};
use std::sync::Arc;

use tower_bedrock_core::{CallReport, ModelRequest, TokenDemand};

use crate::estimate;

fn to_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn max_tokens_of(c: Option<&InferenceConfiguration>) -> Option<u64> {
    c.and_then(|c| c.max_tokens)
        .and_then(|n| u64::try_from(n).ok())
}

fn set_max_tokens(c: &mut Option<InferenceConfiguration>, max: u64) {
    match c {
        Some(c) => c.max_tokens = Some(to_i32(max)),
        None => {
            *c = Some(
                InferenceConfiguration::builder()
                    .max_tokens(to_i32(max))
                    .build(),
            )
        }
    }
}

macro_rules! request_type {
    ($(#[$doc:meta])* $name:ident, $input:ty, |$w:ident| $apply_max:expr $(, $counted:ident)?) => {
        $(#[$doc])*
        ///
        /// **Clones are O(1)**, whatever the size of the prompt: the SDK's
        /// input is shared behind an [`Arc`]. The layers' rewrites are kept
        /// beside it (the model id a fallback sends to, the output cap of
        /// a fallback target) and applied when the request is sent
        /// ([`into_input`](Self::into_input)); the input itself is copied
        /// only when it is still shared at that point or when it must be
        /// edited in place ([`input_mut`](Self::input_mut), a rewrite of an
        /// InvokeModel body's cap).
        #[derive(Debug, Clone)]
        pub struct $name {
            input: Arc<$input>,
            model_id: Option<Arc<str>>,
            max_tokens: Option<u64>,
            /// The caller's report, if one is attached.
            pub report: Option<CallReport>,
            $(
            /// The exact input tokens, when counted (by
            /// [`CountTokensLayer`](crate::CountTokensLayer) or yourself):
            /// [`token_demand`](ModelRequest::token_demand) then uses it
            /// instead of the [heuristic](crate::estimate).
            pub $counted: Option<u64>,
            )?
        }

        impl $name {
            /// Wraps an input.
            pub fn new(input: $input) -> Self {
                $name {
                    input: Arc::new(input),
                    model_id: None,
                    max_tokens: None,
                    report: None,
                    $($counted: None,)?
                }
            }

            /// Attaches a [`CallReport`] that the layers fill in.
            #[must_use]
            pub fn with_report(mut self, report: CallReport) -> Self {
                self.report = Some(report);
                self
            }

            /// The SDK input as given, without the rewrites made since
            /// (read the model id with
            /// [`ModelRequest::model_id`]).
            pub fn input(&self) -> &$input {
                &self.input
            }

            /// The SDK input, with every rewrite applied, to edit in place.
            /// Copies it first if it is shared (with a clone of this
            /// request).
            pub fn input_mut(&mut self) -> &mut $input {
                let model_id = self.model_id.take();
                let max_tokens = self.max_tokens.take();
                let $w = Arc::make_mut(&mut self.input);
                if let Some(id) = model_id {
                    $w.model_id = Some(id.as_ref().to_owned());
                }
                if let Some(max) = max_tokens {
                    $apply_max(max);
                }
                $w
            }

            /// The SDK input with every rewrite applied, as it is sent:
            /// moved out when this request holds the only reference,
            /// copied otherwise.
            pub fn into_input(mut self) -> $input {
                self.input_mut();
                Arc::try_unwrap(self.input).unwrap_or_else(|shared| (*shared).clone())
            }
        }

        impl From<$input> for $name {
            fn from(input: $input) -> Self {
                $name::new(input)
            }
        }
    };
}

request_type!(
    /// A Converse call.
    ConverseRequest,
    ConverseInput,
    |i| |max| set_max_tokens(&mut i.inference_config, max),
    counted_input_tokens
);
request_type!(
    /// A ConverseStream call.
    ConverseStreamRequest,
    ConverseStreamInput,
    |i| |max| set_max_tokens(&mut i.inference_config, max),
    counted_input_tokens
);
request_type!(
    /// An InvokeModel call.
    InvokeModelRequest,
    InvokeModelInput,
    |i| |max| set_invoke_max(&mut i.body, max),
    counted_input_tokens
);
request_type!(
    /// An InvokeModelWithResponseStream call.
    InvokeModelStreamRequest,
    InvokeModelWithResponseStreamInput,
    |i| |max| set_invoke_max(&mut i.body, max),
    counted_input_tokens
);
request_type!(
    /// A CountTokens call.
    CountTokensRequest,
    CountTokensInput,
    |_i| |_max: u64| ()
);

fn invoke_demand(body: Option<&Blob>, counted: Option<u64>) -> TokenDemand {
    let (input_tokens, max_output_tokens) =
        body.map_or((0, None), |b| estimate::invoke_body_demand(b.as_ref()));
    TokenDemand {
        input_tokens: counted.unwrap_or(input_tokens),
        max_output_tokens,
    }
}

fn set_invoke_max(body: &mut Option<Blob>, max: u64) {
    if let Some(b) = body
        && let Some(new) = estimate::set_invoke_max_tokens(b.as_ref(), max)
    {
        *b = Blob::new(new);
    }
}

/// `ModelRequest` for a request wrapper whose `input` has a `model_id`.
/// `converse` inputs give their demand from messages, system prompt and
/// tool definitions by the [heuristic](crate::estimate) and their output cap
/// from `inferenceConfig.maxTokens`; `invoke` inputs from the JSON body, by
/// model family (see
/// [`invoke_body_demand`](crate::estimate::invoke_body_demand)), and
/// rewrite the body's cap (a body that is not a JSON object is left alone).
macro_rules! model_request {
    ($ty:ty, converse) => {
        model_request!(
            $ty,
            |r| {
                let i = &*r.input;
                TokenDemand {
                    input_tokens: r.counted_input_tokens.unwrap_or_else(|| {
                        estimate::converse_tokens(
                            i.messages.as_deref().unwrap_or_default(),
                            i.system.as_deref().unwrap_or_default(),
                            i.tool_config.as_ref(),
                        )
                    }),
                    max_output_tokens: r
                        .max_tokens
                        .or_else(|| max_tokens_of(i.inference_config.as_ref())),
                }
            },
            // Kept beside the shared input, applied when sent.
            |r, max| r.max_tokens = Some(max)
        );
    };
    ($ty:ty, invoke) => {
        model_request!(
            $ty,
            |r| invoke_demand(r.input.body.as_ref(), r.counted_input_tokens),
            // The body itself must change: copied if shared.
            |r, max| set_invoke_max(&mut r.input_mut().body, max)
        );
    };
    ($ty:ty, |$r:ident| $demand:expr, |$w:ident, $max:ident| $set_max:expr) => {
        impl ModelRequest for $ty {
            fn model_id(&self) -> &str {
                self.model_id
                    .as_deref()
                    .or(self.input.model_id.as_deref())
                    .unwrap_or("")
            }

            fn set_model_id(&mut self, model_id: &str) {
                self.model_id = Some(Arc::from(model_id));
            }

            fn token_demand(&self) -> TokenDemand {
                let $r = self;
                $demand
            }

            fn set_max_output_tokens(&mut self, max_tokens: u64) {
                let ($w, $max) = (self, max_tokens);
                $set_max
            }

            fn report(&self) -> Option<&CallReport> {
                self.report.as_ref()
            }
        }
    };
}

model_request!(ConverseRequest, converse);
model_request!(ConverseStreamRequest, converse);
model_request!(InvokeModelRequest, invoke);
model_request!(InvokeModelStreamRequest, invoke);

/// The CountTokens request for the token-relevant fields of a Converse or
/// ConverseStream input (the two are distinct SDK types with the same
/// fields).
macro_rules! count_converse {
    ($converse:expr) => {
        Self::converse_parts(
            $converse.model_id.clone(),
            ConverseTokensRequest::builder()
                .set_messages($converse.messages.clone())
                .set_system($converse.system.clone())
                .set_tool_config($converse.tool_config.clone())
                .set_additional_model_request_fields(
                    $converse.additional_model_request_fields.clone(),
                )
                .build(),
        )
    };
}

impl CountTokensRequest {
    /// A CountTokens call for what a Converse call would send (messages,
    /// system prompt, tools, additional model fields) to the same model:
    /// the exact input tokens, where the [heuristic](crate::estimate)
    /// guesses.
    ///
    /// Fails only if the SDK's input builder does (it has no required
    /// fields today).
    pub fn for_converse(converse: &ConverseInput) -> Result<Self, BuildError> {
        count_converse!(converse)
    }

    /// A CountTokens call for what a ConverseStream call would send (fails
    /// like [`for_converse`](Self::for_converse)).
    pub fn for_converse_stream(converse: &ConverseStreamInput) -> Result<Self, BuildError> {
        count_converse!(converse)
    }

    fn converse_parts(
        model_id: Option<String>,
        tokens: ConverseTokensRequest,
    ) -> Result<Self, BuildError> {
        Ok(CountTokensRequest::new(
            CountTokensInput::builder()
                .set_model_id(model_id)
                .input(TokensInput::Converse(tokens))
                .build()?,
        ))
    }

    /// A CountTokens call for an InvokeModel body (fails like
    /// [`for_converse`](Self::for_converse)).
    pub fn for_invoke(invoke: &InvokeModelInput) -> Result<Self, BuildError> {
        Self::invoke_parts(invoke.model_id.clone(), invoke.body.as_ref())
    }

    /// A CountTokens call for an InvokeModelWithResponseStream body (fails
    /// like [`for_converse`](Self::for_converse)).
    pub fn for_invoke_stream(
        invoke: &InvokeModelWithResponseStreamInput,
    ) -> Result<Self, BuildError> {
        Self::invoke_parts(invoke.model_id.clone(), invoke.body.as_ref())
    }

    fn invoke_parts(model_id: Option<String>, body: Option<&Blob>) -> Result<Self, BuildError> {
        let mut input = CountTokensInput::builder().set_model_id(model_id);
        if let Some(body) = body {
            input = input.input(TokensInput::InvokeModel(
                aws_sdk_bedrockruntime::types::InvokeModelTokensRequest::builder()
                    .body(body.clone())
                    .build()?,
            ));
        }
        Ok(CountTokensRequest::new(input.build()?))
    }
}

impl ModelRequest for CountTokensRequest {
    fn model_id(&self) -> &str {
        self.model_id
            .as_deref()
            .or(self.input.model_id.as_deref())
            .unwrap_or("")
    }

    fn set_model_id(&mut self, model_id: &str) {
        self.model_id = Some(Arc::from(model_id));
    }

    /// Zero: CountTokens is free and consumes no quota.
    fn token_demand(&self) -> TokenDemand {
        TokenDemand {
            input_tokens: 0,
            max_output_tokens: Some(0),
        }
    }

    fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};

    fn converse() -> ConverseRequest {
        ConverseInput::builder()
            .model_id("anthropic.claude-3-haiku-20240307-v1:0")
            .messages(
                Message::builder()
                    .role(ConversationRole::User)
                    .content(ContentBlock::Text("Hello there".into()))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
            .into()
    }

    #[test]
    fn converse_model_and_demand() {
        let mut r = converse();
        assert_eq!(r.model_id(), "anthropic.claude-3-haiku-20240307-v1:0");
        assert_eq!(
            r.token_demand(),
            TokenDemand {
                input_tokens: 3,
                max_output_tokens: None
            }
        );
        r.set_max_output_tokens(77);
        assert_eq!(r.token_demand().max_output_tokens, Some(77));
        r.set_max_output_tokens(u64::MAX);
        assert_eq!(
            r.clone().into_input().inference_config.unwrap().max_tokens,
            Some(i32::MAX)
        );
        let mut r = converse();
        r.set_model_id("us.amazon.nova-lite-v1:0");
        assert_eq!(
            r.clone().into_input().model_id.as_deref(),
            Some("us.amazon.nova-lite-v1:0")
        );
        assert!(r.report().is_none());
        let report = CallReport::new();
        let r = r.with_report(report.clone());
        r.report().unwrap().record_attempt();
        assert_eq!(report.summary().attempts, 1);
    }

    #[test]
    fn clones_share_the_input_and_rewrites_stay_beside_it() {
        let original = converse();
        let mut retargeted = original.clone();
        assert!(std::ptr::eq(original.input(), retargeted.input()), "O(1)");
        retargeted.set_model_id("us.amazon.nova-lite-v1:0");
        retargeted.set_max_output_tokens(64);
        // Still shared: the rewrites are kept beside the input.
        assert!(std::ptr::eq(original.input(), retargeted.input()));
        assert_eq!(retargeted.model_id(), "us.amazon.nova-lite-v1:0");
        assert_eq!(retargeted.token_demand().max_output_tokens, Some(64));
        assert_eq!(
            original.model_id(),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
        assert_eq!(original.token_demand().max_output_tokens, None);
        // Sent: the rewrites are applied to a copy; the original is intact.
        let sent = retargeted.into_input();
        assert_eq!(sent.model_id.as_deref(), Some("us.amazon.nova-lite-v1:0"));
        assert_eq!(sent.inference_config.unwrap().max_tokens, Some(64));
        assert_eq!(
            original.input().model_id.as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        // The only reference is moved out, not copied.
        let alone = converse();
        let at = alone.input() as *const ConverseInput;
        let mut alone = alone;
        assert!(std::ptr::eq(alone.input_mut(), at));
    }

    #[test]
    fn invoke_demand_and_rewrite() {
        let mut r = InvokeModelRequest::new(
            InvokeModelInput::builder()
                .model_id("anthropic.claude-3-haiku-20240307-v1:0")
                .body(Blob::new(
                    r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":500,"messages":[{"role":"user","content":"abcdefgh"}]}"#,
                ))
                .build()
                .unwrap(),
        );
        assert_eq!(
            r.token_demand(),
            TokenDemand {
                input_tokens: 2,
                max_output_tokens: Some(500)
            }
        );
        r.set_max_output_tokens(20);
        assert_eq!(r.token_demand().max_output_tokens, Some(20));
    }

    #[test]
    fn count_tokens_is_free_and_mirrors_converse() {
        let c = converse();
        let r = CountTokensRequest::for_converse(c.input()).unwrap();
        assert_eq!(r.model_id(), c.model_id());
        assert_eq!(r.token_demand().input_tokens, 0);
        assert_eq!(r.token_demand().max_output_tokens, Some(0));
        match r.into_input().input.unwrap() {
            TokensInput::Converse(t) => assert_eq!(t.messages.unwrap().len(), 1),
            other => panic!("unexpected {other:?}"),
        }
    }
}
