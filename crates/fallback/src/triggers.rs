//! Which error classes move a call on to the next target.

use std::fmt;

use tower_bedrock_core::{ErrorClass, LocalRejection, ThrottleKind, UnavailableKind};

use crate::error::BuildError;

/// The set of error classes that make [`ModelFallback`](crate::ModelFallback)
/// try the next target.
///
/// The default set ([`Triggers::default`]) is:
///
/// | class | why |
/// |---|---|
/// | `Throttled(ModelOverloaded)` | the model has no capacity now; another model or region may |
/// | `Throttled(ModelNotReady)` | the model is being loaded or scaled |
/// | `Local(CircuitOpen)` | the breaker below refused instantly: the target is known dead |
/// | `Local(BudgetExhausted)` | the target's token budget has no room within its wait |
/// | `Unavailable(Service)` | a 5xx that the retry layer below could not fix |
///
/// Not in the default set, and available with [`Triggers::with`]:
/// rate throttles (`Throttled(RequestRate | TokenRate | Unspecified)`, which
/// reach this layer only when the retry layer gave up on them),
/// `QuotaExceeded` (a daily quota is spent: another model has its own),
/// `Unavailable(Network | ConnectionPool)` (usually the same endpoint and
/// pool serve every target), `ModelTimeout`, `Local(RequestTooLarge)`,
/// `Local(RetryBudgetExhausted)`, `Local(DeadlineExceeded)` and `Unknown`.
///
/// `Client` errors never fall back: they say the request itself is wrong,
/// and another model would reject it as well (or, worse, accept a request
/// the caller must fix). Configuring one is refused when the layer is built
/// ([`BuildError::ClientTrigger`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Triggers {
    bits: u32,
    refused: Option<ErrorClass>,
}

/// The bit of a class in the set, `None` for client errors and for classes
/// this crate does not know (the taxonomy is non-exhaustive).
const fn bit(class: &ErrorClass) -> Option<u32> {
    let i = match class {
        ErrorClass::Throttled(k) => match k {
            ThrottleKind::RequestRate => 0,
            ThrottleKind::TokenRate => 1,
            ThrottleKind::ModelOverloaded => 2,
            ThrottleKind::ModelNotReady => 3,
            ThrottleKind::Unspecified => 4,
            _ => return None,
        },
        ErrorClass::Unavailable(k) => match k {
            UnavailableKind::ConnectionPool => 5,
            UnavailableKind::Service => 6,
            UnavailableKind::Network => 7,
            _ => return None,
        },
        ErrorClass::ModelTimeout => 8,
        ErrorClass::QuotaExceeded => 9,
        ErrorClass::Local(k) => match k {
            LocalRejection::BudgetExhausted => 10,
            LocalRejection::RequestTooLarge => 11,
            LocalRejection::CircuitOpen => 12,
            LocalRejection::RetryBudgetExhausted => 13,
            LocalRejection::DeadlineExceeded => 14,
            _ => return None,
        },
        ErrorClass::Unknown => 15,
        _ => return None,
    };
    Some(1 << i)
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers::none()
            .with(ErrorClass::Throttled(ThrottleKind::ModelOverloaded))
            .with(ErrorClass::Throttled(ThrottleKind::ModelNotReady))
            .with(ErrorClass::Local(LocalRejection::CircuitOpen))
            .with(ErrorClass::Local(LocalRejection::BudgetExhausted))
            .with(ErrorClass::Unavailable(UnavailableKind::Service))
    }
}

impl Triggers {
    /// An empty set: nothing falls back.
    pub const fn none() -> Self {
        Triggers {
            bits: 0,
            refused: None,
        }
    }

    /// Adds a class. Adding a `Client` class is recorded and refused by the
    /// layer's builder.
    #[must_use]
    pub const fn with(mut self, class: ErrorClass) -> Self {
        if class.is_client() {
            self.refused = Some(class);
            return self;
        }
        if let Some(b) = bit(&class) {
            self.bits |= b;
        }
        self
    }

    /// Removes a class.
    #[must_use]
    pub const fn without(mut self, class: ErrorClass) -> Self {
        if let Some(b) = bit(&class) {
            self.bits &= !b;
        }
        self
    }

    /// Adds the rate throttles (request rate, token rate, unspecified).
    #[must_use]
    pub const fn with_rate_throttles(self) -> Self {
        self.with(ErrorClass::Throttled(ThrottleKind::RequestRate))
            .with(ErrorClass::Throttled(ThrottleKind::TokenRate))
            .with(ErrorClass::Throttled(ThrottleKind::Unspecified))
    }

    /// Whether a failure of this class falls back. Always false for client
    /// errors.
    #[inline]
    pub const fn contains(&self, class: &ErrorClass) -> bool {
        match bit(class) {
            Some(b) => self.bits & b != 0,
            None => false,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        match self.refused {
            Some(class) => Err(BuildError::ClientTrigger { class }),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Triggers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [
            ErrorClass::Throttled(ThrottleKind::RequestRate),
            ErrorClass::Throttled(ThrottleKind::TokenRate),
            ErrorClass::Throttled(ThrottleKind::ModelOverloaded),
            ErrorClass::Throttled(ThrottleKind::ModelNotReady),
            ErrorClass::Throttled(ThrottleKind::Unspecified),
            ErrorClass::Unavailable(UnavailableKind::ConnectionPool),
            ErrorClass::Unavailable(UnavailableKind::Service),
            ErrorClass::Unavailable(UnavailableKind::Network),
            ErrorClass::ModelTimeout,
            ErrorClass::QuotaExceeded,
            ErrorClass::Local(LocalRejection::BudgetExhausted),
            ErrorClass::Local(LocalRejection::RequestTooLarge),
            ErrorClass::Local(LocalRejection::CircuitOpen),
            ErrorClass::Local(LocalRejection::RetryBudgetExhausted),
            ErrorClass::Local(LocalRejection::DeadlineExceeded),
            ErrorClass::Unknown,
        ];
        f.debug_set()
            .entries(all.iter().filter(|c| self.contains(c)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_bedrock_core::ClientKind;

    #[test]
    fn defaults() {
        let t = Triggers::default();
        assert!(t.contains(&ErrorClass::Throttled(ThrottleKind::ModelOverloaded)));
        assert!(t.contains(&ErrorClass::Throttled(ThrottleKind::ModelNotReady)));
        assert!(t.contains(&ErrorClass::Local(LocalRejection::CircuitOpen)));
        assert!(t.contains(&ErrorClass::Local(LocalRejection::BudgetExhausted)));
        assert!(t.contains(&ErrorClass::Unavailable(UnavailableKind::Service)));
        assert!(!t.contains(&ErrorClass::Throttled(ThrottleKind::TokenRate)));
        assert!(!t.contains(&ErrorClass::QuotaExceeded));
        assert!(!t.contains(&ErrorClass::Unknown));
        assert!(!t.contains(&ErrorClass::Client(ClientKind::Validation)));
        assert!(t.validate().is_ok());
    }

    #[test]
    fn with_and_without() {
        let t = Triggers::none()
            .with_rate_throttles()
            .with(ErrorClass::QuotaExceeded)
            .without(ErrorClass::Throttled(ThrottleKind::RequestRate));
        assert!(t.contains(&ErrorClass::Throttled(ThrottleKind::TokenRate)));
        assert!(!t.contains(&ErrorClass::Throttled(ThrottleKind::RequestRate)));
        assert!(t.contains(&ErrorClass::QuotaExceeded));
        assert_eq!(
            format!("{t:?}"),
            "{Throttled(TokenRate), Throttled(Unspecified), QuotaExceeded}"
        );
    }

    #[test]
    fn client_classes_are_refused() {
        let t = Triggers::default().with(ErrorClass::Client(ClientKind::NotFound));
        assert!(!t.contains(&ErrorClass::Client(ClientKind::NotFound)));
        assert_eq!(
            t.validate(),
            Err(BuildError::ClientTrigger {
                class: ErrorClass::Client(ClientKind::NotFound)
            })
        );
    }
}
