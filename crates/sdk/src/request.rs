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
    ($(#[$doc:meta])* $name:ident, $input:ty $(, $counted:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            /// The SDK's input, sent as is.
            pub input: $input,
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
                $name { input, report: None, $($counted: None,)? }
            }

            /// Attaches a [`CallReport`] that the layers fill in.
            #[must_use]
            pub fn with_report(mut self, report: CallReport) -> Self {
                self.report = Some(report);
                self
            }

            /// The SDK input.
            pub fn into_input(self) -> $input {
                self.input
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
    counted_input_tokens
);
request_type!(
    /// A ConverseStream call.
    ConverseStreamRequest,
    ConverseStreamInput,
    counted_input_tokens
);
request_type!(
    /// An InvokeModel call.
    InvokeModelRequest,
    InvokeModelInput,
    counted_input_tokens
);
request_type!(
    /// An InvokeModelWithResponseStream call.
    InvokeModelStreamRequest,
    InvokeModelWithResponseStreamInput,
    counted_input_tokens
);
request_type!(
    /// A CountTokens call.
    CountTokensRequest,
    CountTokensInput
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
                let i = &r.input;
                TokenDemand {
                    input_tokens: r.counted_input_tokens.unwrap_or_else(|| {
                        estimate::converse_tokens(
                            i.messages.as_deref().unwrap_or_default(),
                            i.system.as_deref().unwrap_or_default(),
                            i.tool_config.as_ref(),
                        )
                    }),
                    max_output_tokens: max_tokens_of(i.inference_config.as_ref()),
                }
            },
            |r, max| set_max_tokens(&mut r.input.inference_config, max)
        );
    };
    ($ty:ty, invoke) => {
        model_request!(
            $ty,
            |r| invoke_demand(r.input.body.as_ref(), r.counted_input_tokens),
            |r, max| set_invoke_max(&mut r.input.body, max)
        );
    };
    ($ty:ty, |$r:ident| $demand:expr, |$w:ident, $max:ident| $set_max:expr) => {
        impl ModelRequest for $ty {
            fn model_id(&self) -> &str {
                self.input.model_id.as_deref().unwrap_or("")
            }

            fn set_model_id(&mut self, model_id: &str) {
                self.input.model_id = Some(model_id.to_owned());
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
        self.input.model_id.as_deref().unwrap_or("")
    }

    fn set_model_id(&mut self, model_id: &str) {
        self.input.model_id = Some(model_id.to_owned());
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
        assert_eq!(r.input.inference_config.unwrap().max_tokens, Some(i32::MAX));
        let mut r = converse();
        r.set_model_id("us.amazon.nova-lite-v1:0");
        assert_eq!(
            r.input.model_id.as_deref(),
            Some("us.amazon.nova-lite-v1:0")
        );
        assert!(r.report().is_none());
        let report = CallReport::new();
        let r = r.with_report(report.clone());
        r.report().unwrap().record_attempt();
        assert_eq!(report.summary().attempts, 1);
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
        let r = CountTokensRequest::for_converse(&c.input).unwrap();
        assert_eq!(r.model_id(), c.model_id());
        assert_eq!(r.token_demand().input_tokens, 0);
        assert_eq!(r.token_demand().max_output_tokens, Some(0));
        match r.input.input.unwrap() {
            TokensInput::Converse(t) => assert_eq!(t.messages.unwrap().len(), 1),
            other => panic!("unexpected {other:?}"),
        }
    }
}
