//! What a failed call is settled to: the part of its reservation Bedrock
//! can have counted.

use tower_bedrock_core::{ClientKind, ErrorClass, UnavailableKind};

/// What the budget does with a reservation when the call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorSettlement {
    /// The call never consumed quota: refund the whole reservation (tokens
    /// and the request).
    Refund,
    /// The model read the input and produced nothing the caller received:
    /// the request and its (estimated) input tokens count, the reserved
    /// output is refunded.
    Input,
    /// Bedrock may have counted the whole call: keep the reservation.
    Keep,
}

/// The default rule for failed calls: settle with what Bedrock can have
/// counted. The layer cannot see inside the inner service, so it decides
/// from the error's class.
///
/// | class | settlement | why |
/// |---|---|---|
/// | `Local(*)` | refund | refused by a layer below, never sent |
/// | `Throttled(*)` | refund | refused at admission: a throttled request consumes no quota (the 429 *is* the quota saying no) |
/// | `QuotaExceeded` | refund | refused before inference |
/// | `Client(Validation \| AccessDenied \| NotFound \| Conflict \| Other)` | refund | rejected before inference |
/// | `Unavailable(ConnectionPool \| Service)` | refund | a 503 ("Too many connections", `ServiceUnavailableException`) or 500 answered as the call's response: the service refused the call before producing output |
/// | `Client(ModelError)` | input | the model ran on the input and failed |
/// | `ModelTimeout` | input | the model ran on the input and gave up |
/// | `Unavailable(Network)` | keep | the request may have reached Bedrock and still be running |
/// | `Unknown` | keep | conservative |
///
/// Evidence, and where it is thin. AWS documents the token quota's
/// accounting for *successful* calls only: at the start of a request the
/// quota is charged its input plus `max_tokens` times the burndown rate,
/// and at the end it is adjusted to the real usage. It documents no
/// charge for a refused (throttled) request. It says nothing of what a
/// failed call costs. The rows marked refund therefore follow the one
/// observable fact: these errors are answered *instead of* a response,
/// with no output tokens; a call Bedrock refused before admitting it
/// cannot hold quota. The workspace's emulator answers all of them before
/// its quota admission (they consume nothing there). `input` is a guess in
/// the conservative direction for failures that happen after inference
/// started. A dropped response future whose call was already forwarded,
/// or a response without usage, keeps its reservation (the request may be
/// running at Bedrock). A stream cut after its first output event settles
/// through its usage callback (with what the stream reported).
///
/// If the guess is wrong for an account, the adaptive limit absorbs it:
/// throttles in a window the budget believed had room mark that window
/// full ([`Adaptive`](crate::Adaptive)).
pub fn default_error_settlement(class: &ErrorClass) -> ErrorSettlement {
    match class {
        ErrorClass::Local(_) | ErrorClass::Throttled(_) | ErrorClass::QuotaExceeded => {
            ErrorSettlement::Refund
        }
        ErrorClass::Client(ClientKind::ModelError) | ErrorClass::ModelTimeout => {
            ErrorSettlement::Input
        }
        ErrorClass::Client(_) => ErrorSettlement::Refund,
        ErrorClass::Unavailable(UnavailableKind::ConnectionPool | UnavailableKind::Service) => {
            ErrorSettlement::Refund
        }
        _ => ErrorSettlement::Keep,
    }
}
