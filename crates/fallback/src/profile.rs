//! Cross-region inference profile ids, geographic boundaries and chains
//! built from a base model.
//!
//! Bedrock serves a model in three ways: in the client's own region (the
//! plain model id, `anthropic.claude-sonnet-4-20250514-v1:0`), through a
//! geographic cross-region inference profile that stays inside one
//! geography (`us.`, `eu.`, `apac.`, `jp.`, `au.`, `ca.`, `us-gov.`), or
//! through a global profile (`global.`) that may route anywhere. Each has
//! quotas of its own, which is what makes them useful fallbacks for one
//! another.
//!
//! Parsing builds on [`tower_bedrock_core::model::split_profile`], so every
//! crate of the workspace agrees on what a profile id is.

use std::fmt;
use std::str::FromStr;

use tower_bedrock_core::model::{resource_id, split_profile};

use crate::error::BuildError;

/// The scope of a cross-region inference profile: the prefix of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Geo {
    /// `global.`: may route to any commercial region in the world.
    Global,
    /// `us.`: United States regions.
    Us,
    /// `us-gov.`: AWS GovCloud (US) regions.
    UsGov,
    /// `eu.`: European Union regions.
    Eu,
    /// `apac.`: Asia Pacific regions.
    Apac,
    /// `jp.`: Japan regions (inside Asia Pacific).
    Jp,
    /// `au.`: Australia regions (inside Asia Pacific).
    Au,
    /// `ca.`: Canada regions.
    Ca,
}

impl Geo {
    /// Every scope, in a stable order.
    pub const ALL: [Geo; 8] = [
        Geo::Global,
        Geo::Us,
        Geo::UsGov,
        Geo::Eu,
        Geo::Apac,
        Geo::Jp,
        Geo::Au,
        Geo::Ca,
    ];

    /// The id prefix, without the dot (`"us-gov"`).
    pub const fn prefix(self) -> &'static str {
        match self {
            Geo::Global => "global",
            Geo::Us => "us",
            Geo::UsGov => "us-gov",
            Geo::Eu => "eu",
            Geo::Apac => "apac",
            Geo::Jp => "jp",
            Geo::Au => "au",
            Geo::Ca => "ca",
        }
    }

    /// The scope of a prefix (without the dot), if it is one.
    pub fn from_prefix(prefix: &str) -> Option<Geo> {
        Geo::ALL.into_iter().find(|g| g.prefix() == prefix)
    }

    /// The geography an AWS region belongs to, for in-region calls:
    /// `eu-west-1` is in [`Geo::Eu`], `us-gov-west-1` in [`Geo::UsGov`],
    /// `ap-northeast-1` (Tokyo) and `ap-northeast-3` (Osaka) in
    /// [`Geo::Jp`], `ap-southeast-2` (Sydney) and `ap-southeast-4`
    /// (Melbourne) in [`Geo::Au`], other `ap-` regions in [`Geo::Apac`],
    /// `ca-` regions in [`Geo::Ca`]. Regions of no profile geography
    /// (`sa-`, `me-`, `af-`, ...) give `None`.
    pub fn of_region(region: &str) -> Option<Geo> {
        let r = region.trim();
        if r.starts_with("us-gov-") {
            Some(Geo::UsGov)
        } else if r.starts_with("us-") {
            Some(Geo::Us)
        } else if r.starts_with("eu-") {
            Some(Geo::Eu)
        } else if matches!(r, "ap-northeast-1" | "ap-northeast-3") {
            Some(Geo::Jp)
        } else if matches!(r, "ap-southeast-2" | "ap-southeast-4") {
            Some(Geo::Au)
        } else if r.starts_with("ap-") {
            Some(Geo::Apac)
        } else if r.starts_with("ca-") {
            Some(Geo::Ca)
        } else {
            None
        }
    }

    /// Whether traffic routed within `other` stays within `self`: a scope
    /// contains itself; [`Geo::Apac`] contains [`Geo::Jp`] and [`Geo::Au`];
    /// [`Geo::Us`] contains [`Geo::UsGov`]; [`Geo::Global`] contains every
    /// scope. No geographic scope contains [`Geo::Global`].
    pub const fn contains(self, other: Geo) -> bool {
        matches!(
            (self, other),
            (Geo::Global, _)
                | (Geo::Us, Geo::Us | Geo::UsGov)
                | (Geo::UsGov, Geo::UsGov)
                | (Geo::Eu, Geo::Eu)
                | (Geo::Apac, Geo::Apac | Geo::Jp | Geo::Au)
                | (Geo::Jp, Geo::Jp)
                | (Geo::Au, Geo::Au)
                | (Geo::Ca, Geo::Ca)
        )
    }
}

impl fmt::Display for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// A parsed model or inference profile id: an optional [`Geo`] scope and
/// the base foundation model id.
///
/// ```
/// use tower_bedrock_fallback::profile::{Geo, ProfileId};
///
/// let p = ProfileId::parse("eu.anthropic.claude-3-haiku-20240307-v1:0");
/// assert_eq!(p.scope(), Some(Geo::Eu));
/// assert_eq!(p.base(), "anthropic.claude-3-haiku-20240307-v1:0");
/// assert_eq!(p.with_scope(Some(Geo::Global)).to_string(),
///            "global.anthropic.claude-3-haiku-20240307-v1:0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileId {
    scope: Option<Geo>,
    base: String,
}

impl ProfileId {
    /// Parses a model id, profile id or ARN of either. ARNs are reduced to
    /// their resource id (the region they name is dropped: use
    /// [`arn_region`] to read it).
    pub fn parse(id: &str) -> ProfileId {
        let (prefix, base) = split_profile(id);
        ProfileId {
            scope: prefix.and_then(Geo::from_prefix),
            base: base.to_owned(),
        }
    }

    /// A profile of `base` (any id: an existing prefix is replaced) in the
    /// given scope; `None` gives the plain, in-region model id.
    pub fn new(scope: Option<Geo>, base: &str) -> ProfileId {
        ProfileId {
            scope,
            base: split_profile(base).1.to_owned(),
        }
    }

    /// The scope, `None` for an in-region model id.
    pub fn scope(&self) -> Option<Geo> {
        self.scope
    }

    /// The base foundation model id.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same model in another scope.
    #[must_use]
    pub fn with_scope(&self, scope: Option<Geo>) -> ProfileId {
        ProfileId {
            scope,
            base: self.base.clone(),
        }
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope {
            Some(g) => write!(f, "{}.{}", g.prefix(), self.base),
            None => f.write_str(&self.base),
        }
    }
}

impl FromStr for ProfileId {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ProfileId::parse(s))
    }
}

/// The profile id of `base` in `scope` (`None`: the in-region model id).
///
/// ```
/// use tower_bedrock_fallback::profile::{profile_id, Geo};
/// assert_eq!(profile_id(Some(Geo::UsGov), "us.amazon.nova-lite-v1:0"),
///            "us-gov.amazon.nova-lite-v1:0");
/// assert_eq!(profile_id(None, "global.amazon.nova-lite-v1:0"), "amazon.nova-lite-v1:0");
/// ```
pub fn profile_id(scope: Option<Geo>, base: &str) -> String {
    ProfileId::new(scope, base).to_string()
}

/// The region named by an ARN (`arn:aws:bedrock:eu-west-1:...`), if `id`
/// is an ARN with a region.
pub fn arn_region(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (_partition, _service, region) = (parts.next()?, parts.next()?, parts.next()?);
    (!region.is_empty()).then_some(region)
}

/// The target ids of a cross-region chain for one model: the model in each
/// scope, in the order given, then (if `in_region`) the plain model id.
///
/// ```
/// use tower_bedrock_fallback::profile::{cross_region_ids, Geo};
/// let ids = cross_region_ids("anthropic.claude-sonnet-4-20250514-v1:0", &[Geo::Global, Geo::Us], true);
/// assert_eq!(ids, [
///     "global.anthropic.claude-sonnet-4-20250514-v1:0",
///     "us.anthropic.claude-sonnet-4-20250514-v1:0",
///     "anthropic.claude-sonnet-4-20250514-v1:0",
/// ]);
/// ```
pub fn cross_region_ids(base: &str, scopes: &[Geo], in_region: bool) -> Vec<String> {
    let base = ProfileId::new(None, base);
    let mut ids: Vec<String> = scopes
        .iter()
        .map(|g| base.with_scope(Some(*g)).to_string())
        .collect();
    if in_region {
        ids.push(base.to_string());
    }
    ids
}

/// A data-residency boundary: the scopes a chain's targets may route to.
///
/// A boundary is checked when the layer is built: a chain containing a
/// target that could route outside it is refused with
/// [`BuildError::OutsideBoundary`] (or [`BuildError::RegionUnknown`] for an
/// in-region model id whose region the boundary cannot tell), so an EU
/// workload never leaves `eu.` because of a fallback.
///
/// - A profile id (`eu.X`) is inside when one of the boundary's scopes
///   [contains](Geo::contains) its scope; `global.` is inside no
///   geographic boundary.
/// - A plain model id runs in the client's region: it is inside when the
///   boundary knows that region ([`Boundary::home_region`]) and the
///   region's geography is inside. A foundation-model ARN names its region
///   itself.
/// - An application inference profile ARN
///   (`arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>`)
///   is refused ([`BuildError::ApplicationProfile`]) unless the boundary
///   [allows them](Boundary::allow_application_profiles): such a profile
///   may copy a `global.` or `us.` system profile and route wherever that
///   one does, whatever region its ARN names.
///
/// The layer also keeps the boundary at run time: a
/// [`Target::map_request`](crate::Target::map_request) that changes the
/// request's model id has the target's id put back.
///
/// ```
/// use tower_bedrock_fallback::profile::{Boundary, Geo};
///
/// let eu = Boundary::within(Geo::Eu).home_region("eu-central-1");
/// assert!(eu.check("eu.amazon.nova-pro-v1:0").is_ok());
/// assert!(eu.check("amazon.nova-pro-v1:0").is_ok()); // runs in eu-central-1
/// assert!(eu.check("global.amazon.nova-pro-v1:0").is_err());
/// assert!(eu.check("us.amazon.nova-pro-v1:0").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundary {
    scopes: Vec<Geo>,
    home_region: Option<String>,
    application_profiles: bool,
}

impl Boundary {
    /// A boundary of one scope.
    pub fn within(scope: Geo) -> Boundary {
        Boundary {
            scopes: vec![scope],
            home_region: None,
            application_profiles: false,
        }
    }

    /// Widens the boundary with another scope.
    #[must_use]
    pub fn or(mut self, scope: Geo) -> Boundary {
        if !self.scopes.contains(&scope) {
            self.scopes.push(scope);
        }
        self
    }

    /// Declares the region the client calls (where plain model ids run).
    #[must_use]
    pub fn home_region(mut self, region: impl Into<String>) -> Boundary {
        self.home_region = Some(region.into());
        self
    }

    /// Accepts application inference profile ARNs whose region is inside
    /// the boundary. Their routing cannot be read from their id: allow them
    /// only once you have checked that each of yours copies a model or a
    /// profile inside the boundary (`GetInferenceProfile` lists the
    /// regions it routes to).
    #[must_use]
    pub fn allow_application_profiles(mut self) -> Boundary {
        self.application_profiles = true;
        self
    }

    /// The boundary's scopes.
    pub fn scopes(&self) -> &[Geo] {
        &self.scopes
    }

    fn contains(&self, geo: Geo) -> bool {
        self.scopes.iter().any(|s| s.contains(geo))
    }

    /// Checks one target id against the boundary.
    pub fn check(&self, id: &str) -> Result<(), BuildError> {
        let outside = || BuildError::OutsideBoundary {
            target: id.to_owned(),
            boundary: self.to_string(),
        };
        let is_arn = id.starts_with("arn:");
        if is_arn && is_application_profile(id) && !self.application_profiles {
            return Err(BuildError::ApplicationProfile {
                target: id.to_owned(),
            });
        }
        let (prefix, _) = split_profile(resource_id(id));
        match prefix {
            Some(p) => match Geo::from_prefix(p) {
                Some(g) if self.contains(g) => Ok(()),
                _ => Err(outside()),
            },
            None => {
                let region = if is_arn {
                    arn_region(id)
                } else {
                    self.home_region.as_deref()
                };
                match region {
                    None => Err(BuildError::RegionUnknown {
                        target: id.to_owned(),
                    }),
                    Some(r) => match Geo::of_region(r) {
                        Some(g) if self.contains(g) => Ok(()),
                        _ => Err(outside()),
                    },
                }
            }
        }
    }
}

/// Whether an ARN names an application inference profile (its resource
/// type, between the last `:` and the `/`).
fn is_application_profile(arn: &str) -> bool {
    arn.rsplit_once('/')
        .and_then(|(head, _)| head.rsplit_once(':'))
        .is_some_and(|(_, kind)| kind == "application-inference-profile")
}

impl fmt::Display for Boundary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            write!(f, "{s}")?;
        }
        if let Some(r) = &self.home_region {
            write!(f, " (home region {r})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_bedrock_core::model::PROFILE_PREFIXES;

    #[test]
    fn every_core_prefix_is_a_geo_and_round_trips() {
        for p in PROFILE_PREFIXES {
            let g = Geo::from_prefix(p).expect("core prefix without a Geo");
            assert_eq!(g.prefix(), *p);
            let id = format!("{p}.amazon.nova-lite-v1:0");
            let parsed = ProfileId::parse(&id);
            assert_eq!(parsed.scope(), Some(g));
            assert_eq!(parsed.base(), "amazon.nova-lite-v1:0");
            assert_eq!(parsed.to_string(), id);
        }
        assert_eq!(Geo::ALL.len(), PROFILE_PREFIXES.len());
    }

    #[test]
    fn parse_plain_and_arn() {
        let p = ProfileId::parse("anthropic.claude-3-haiku-20240307-v1:0");
        assert_eq!(p.scope(), None);
        assert_eq!(p.to_string(), "anthropic.claude-3-haiku-20240307-v1:0");
        let arn =
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-lite-v1:0";
        assert_eq!(ProfileId::parse(arn).scope(), Some(Geo::Eu));
        assert_eq!(arn_region(arn), Some("eu-west-1"));
        assert_eq!(arn_region("amazon.nova"), None);
        assert_eq!(arn_region("arn:aws:bedrock::123:x"), None);
        // us-gov wins over us.
        assert_eq!(
            ProfileId::parse("us-gov.amazon.nova-lite-v1:0").scope(),
            Some(Geo::UsGov)
        );
        assert_eq!(
            "us.a.b".parse::<ProfileId>().unwrap().scope(),
            Some(Geo::Us)
        );
    }

    #[test]
    fn regions() {
        assert_eq!(Geo::of_region("us-east-1"), Some(Geo::Us));
        assert_eq!(Geo::of_region("us-gov-west-1"), Some(Geo::UsGov));
        assert_eq!(Geo::of_region("eu-west-3"), Some(Geo::Eu));
        assert_eq!(Geo::of_region("ap-northeast-1"), Some(Geo::Jp));
        assert_eq!(Geo::of_region("ap-southeast-2"), Some(Geo::Au));
        assert_eq!(Geo::of_region("ap-south-1"), Some(Geo::Apac));
        assert_eq!(Geo::of_region("ca-central-1"), Some(Geo::Ca));
        assert_eq!(Geo::of_region("sa-east-1"), None);
    }

    #[test]
    fn containment() {
        assert!(Geo::Apac.contains(Geo::Jp));
        assert!(!Geo::Jp.contains(Geo::Apac));
        assert!(Geo::Us.contains(Geo::UsGov));
        assert!(!Geo::Eu.contains(Geo::Global));
        assert!(Geo::Global.contains(Geo::Eu));
    }

    #[test]
    fn boundary_checks() {
        let eu = Boundary::within(Geo::Eu);
        assert!(eu.check("eu.amazon.nova-lite-v1:0").is_ok());
        assert!(matches!(
            eu.check("amazon.nova-lite-v1:0"),
            Err(BuildError::RegionUnknown { .. })
        ));
        assert!(matches!(
            eu.check("global.amazon.nova-lite-v1:0"),
            Err(BuildError::OutsideBoundary { .. })
        ));
        assert!(
            eu.check("arn:aws:bedrock:eu-west-1::foundation-model/amazon.nova-lite-v1:0")
                .is_ok()
        );
        assert!(
            eu.check("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0")
                .is_err()
        );
        let eu_home_us = Boundary::within(Geo::Eu).home_region("us-east-1");
        assert!(eu_home_us.check("amazon.nova-lite-v1:0").is_err());
        // An application profile in an EU region may copy a global profile:
        // refused unless allowed.
        let app = "arn:aws:bedrock:eu-central-1:123456789012:application-inference-profile/a1b2c3";
        assert_eq!(
            eu.check(app),
            Err(BuildError::ApplicationProfile {
                target: app.to_owned()
            })
        );
        let allowed = Boundary::within(Geo::Eu).allow_application_profiles();
        assert!(allowed.check(app).is_ok());
        assert!(
            allowed
                .check("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1")
                .is_err()
        );
        // System profiles' ARNs are read from their prefix as before.
        assert!(
            eu.check("arn:aws:bedrock:eu-central-1:123456789012:inference-profile/global.amazon.nova-lite-v1:0")
                .is_err()
        );
        let apac = Boundary::within(Geo::Apac).or(Geo::Eu);
        assert!(apac.check("jp.amazon.nova-lite-v1:0").is_ok());
        assert!(apac.check("au.amazon.nova-lite-v1:0").is_ok());
        assert!(apac.check("eu.amazon.nova-lite-v1:0").is_ok());
        assert!(apac.check("us.amazon.nova-lite-v1:0").is_err());
        assert_eq!(apac.to_string(), "apac|eu");
    }

    #[test]
    fn cross_region_chains() {
        assert_eq!(
            cross_region_ids("us.m.x", &[Geo::Eu], false),
            vec!["eu.m.x".to_string()]
        );
        assert_eq!(profile_id(Some(Geo::Jp), "apac.m.x"), "jp.m.x");
    }
}
