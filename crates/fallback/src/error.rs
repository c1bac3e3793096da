//! Errors of the fallback layer's own: bad configuration, refused when the
//! layer is built.
//!
//! At call time the layer has no errors of its own: it returns the inner
//! service's error (see the crate docs for which one when every target
//! fails).

use std::error::Error;
use std::fmt;

use tower_bedrock_core::ErrorClass;

/// A configuration refused by
/// [`ModelFallbackBuilder::build`](crate::ModelFallbackBuilder::build) or by
/// a [`Boundary`](crate::profile::Boundary) check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The builder was given no chain at all.
    NoChain,
    /// A chain has no target.
    EmptyChain,
    /// A target id is empty or contains whitespace.
    InvalidTarget {
        /// The offending id.
        target: String,
    },
    /// The same target appears twice in one chain.
    DuplicateTarget {
        /// The repeated id.
        target: String,
    },
    /// Two chains start with the same primary id, so a request for it
    /// would be ambiguous.
    DuplicateChain {
        /// The shared primary id.
        primary: String,
    },
    /// A target may route outside the configured geographic boundary.
    OutsideBoundary {
        /// The offending id.
        target: String,
        /// The boundary, as displayed.
        boundary: String,
    },
    /// A plain (in-region) model id under a boundary that does not know the
    /// client's region: declare it with
    /// [`Boundary::home_region`](crate::profile::Boundary::home_region).
    RegionUnknown {
        /// The offending id.
        target: String,
    },
    /// An application inference profile ARN under a geographic boundary
    /// that does not allow them: such a profile may copy a `global.` or
    /// `us.` system profile and route anywhere that profile does, whatever
    /// region its ARN names. Allow them, once you know where each of yours
    /// routes, with
    /// [`Boundary::allow_application_profiles`](crate::profile::Boundary::allow_application_profiles).
    ApplicationProfile {
        /// The offending ARN.
        target: String,
    },
    /// A chain deadline of zero would never try a fallback target.
    ZeroChainDeadline,
    /// A client-error class was configured as a trigger: client errors
    /// never fall back.
    ClientTrigger {
        /// The refused class.
        class: ErrorClass,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoChain => f.write_str("model fallback configured without any chain"),
            BuildError::EmptyChain => f.write_str("model fallback chain without any target"),
            BuildError::InvalidTarget { target } => {
                write!(f, "invalid fallback target id {target:?}")
            }
            BuildError::DuplicateTarget { target } => {
                write!(f, "fallback target {target} appears twice in one chain")
            }
            BuildError::DuplicateChain { primary } => {
                write!(f, "two fallback chains start with {primary}")
            }
            BuildError::OutsideBoundary { target, boundary } => write!(
                f,
                "fallback target {target} may route outside the geographic boundary {boundary}"
            ),
            BuildError::RegionUnknown { target } => write!(
                f,
                "in-region target {target} under a geographic boundary without a home region"
            ),
            BuildError::ApplicationProfile { target } => write!(
                f,
                "application inference profile {target} under a geographic boundary: its routing is not known from its id"
            ),
            BuildError::ZeroChainDeadline => f.write_str("model fallback chain deadline of zero"),
            BuildError::ClientTrigger { class } => {
                write!(f, "client errors never fall back (trigger {class} refused)")
            }
        }
    }
}

impl Error for BuildError {}
