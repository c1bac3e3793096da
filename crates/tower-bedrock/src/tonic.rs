//! tonic integration (feature `tonic`): the stack's errors as gRPC
//! statuses, the caller's deadline from `grpc-timeout`.
//!
//! - [`ErrorReply`] converts into a [`Status`]: the code from the error's
//!   class (see the table on [`ErrorReply`]), a message naming the class
//!   (`throttled/token_rate: ...`), the code and the request id (never the
//!   prompt or an error message),
//!   and `grpc-retry-pushback-ms` metadata, the retry hint gRPC clients
//!   read (gRFC A6): the milliseconds to wait when the caller may come
//!   back, `-1` ("do not retry") when coming back does not help.
//!   [`into_status`] does it for the stack's error in one step, for
//!   `map_err`.
//! - [`caller_deadline`] reads the caller's `grpc-timeout` through a
//!   [`CallerDeadline`] policy, for [`call_within`](crate::caller::call_within).
//!
//! ```
//! use tonic::{Request, Response, Status};
//! use tower_bedrock::caller::{CallerDeadline, call_within};
//! use tower_bedrock::sdk::{ConverseRequest, ConverseResponse};
//! use tower_bedrock::tonic::{caller_deadline, into_status};
//!
//! # type SdkError = tower_bedrock::sdk::ConverseSdkError;
//! type Stack = tower_bedrock::BoxCloneSyncService<
//!     ConverseRequest,
//!     ConverseResponse,
//!     tower_bedrock::core::ClassifiedError<SdkError>,
//! >;
//!
//! async fn ask(stack: &Stack, request: Request<ConverseRequest>) -> Result<ConverseResponse, Status> {
//!     let limit = caller_deadline(&CallerDeadline::new(), request.metadata())?;
//!     call_within(&mut stack.clone(), request.into_inner(), limit)
//!         .await
//!         .map_err(into_status) // RESOURCE_EXHAUSTED with grpc-retry-pushback-ms...
//! }
//! ```

use std::time::Duration;

use ::tonic::metadata::{MetadataMap, MetadataValue};
use ::tonic::{Code, Status};
use tower_bedrock_core::{Classified, ClientKind, ErrorClass, LocalRejection};

use crate::caller::CallerDeadline;
use crate::reply::ErrorReply;

/// The metadata key of gRPC's server retry pushback (gRFC A6).
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

impl ErrorReply {
    /// The gRPC code of this reply (see the table on [`ErrorReply`]).
    pub fn grpc_code(&self) -> Code {
        if self.is_shed() {
            Code::ResourceExhausted
        } else {
            grpc_code(&self.class())
        }
    }
}

fn grpc_code(class: &ErrorClass) -> Code {
    match class {
        ErrorClass::Throttled(_) | ErrorClass::QuotaExceeded => Code::ResourceExhausted,
        ErrorClass::Unavailable(_) => Code::Unavailable,
        ErrorClass::ModelTimeout => Code::DeadlineExceeded,
        ErrorClass::Local(kind) => match kind {
            LocalRejection::BudgetExhausted => Code::ResourceExhausted,
            LocalRejection::RequestTooLarge => Code::InvalidArgument,
            LocalRejection::CircuitOpen | LocalRejection::RetryBudgetExhausted => Code::Unavailable,
            LocalRejection::DeadlineExceeded => Code::DeadlineExceeded,
            _ => Code::Unavailable,
        },
        ErrorClass::Client(kind) => match kind {
            ClientKind::AccessDenied => Code::PermissionDenied,
            ClientKind::NotFound => Code::NotFound,
            ClientKind::Conflict => Code::Aborted,
            _ => Code::InvalidArgument,
        },
        _ => Code::Unknown,
    }
}

impl From<ErrorReply> for Status {
    fn from(reply: ErrorReply) -> Status {
        // `class/kind: ...`: a prefix for programs, then the reply's words.
        let class = reply.class();
        let message = format!("{}/{}: {reply}", class.label(), class.kind_label());
        let mut status = Status::new(reply.grpc_code(), message);
        let pushback = match reply.retry_after() {
            Some(after) => {
                let ms = after.as_millis() + u128::from(after.subsec_nanos() % 1_000_000 > 0);
                ms.max(1).to_string()
            }
            None => "-1".to_owned(),
        };
        if let Ok(v) = MetadataValue::try_from(pushback) {
            status.metadata_mut().insert(RETRY_PUSHBACK_MS, v);
        }
        status
    }
}

/// The [`Status`] for an error of the stack (through [`ErrorReply`], with
/// 60 s quota windows; use [`ErrorReply::from_error_in`] for others).
pub fn into_status<E: Classified>(error: E) -> Status {
    ErrorReply::from_error(&error).into()
}

/// The caller's time limit from its `grpc-timeout` (or the policy's
/// millisecond header, or its default; see [`CallerDeadline::resolve`]); an
/// invalid value is `INVALID_ARGUMENT`.
pub fn caller_deadline(
    policy: &CallerDeadline,
    metadata: &MetadataMap,
) -> Result<Option<Duration>, Status> {
    policy
        .resolve(|name| {
            metadata
                .get(name)
                // Present but not visible ASCII: invalid, not absent.
                .map(|v| v.to_str().unwrap_or(""))
        })
        .map_err(|e| ErrorReply::from(e).into())
}
