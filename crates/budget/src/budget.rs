//! The shared [`Budget`], its builder, tenants and introspection.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Waker;
use std::time::Duration;

use metrics::Gauge;
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;
use tower_bedrock_core::{ErrorClass, ThrottleKind, names};

use crate::error::BuildError;
use crate::estimate::ReservationPolicy;
use crate::layer::TokenBudgetLayer;
use crate::store::{
    BudgetStore, Charge, InMemoryStore, Limits, StoreKey, StoreSnapshot, WindowSpec,
};

/// What the budget does with a reservation when the call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSettlement {
    /// The call never consumed quota: refund the whole reservation (tokens
    /// and the request).
    Refund,
    /// Bedrock counted the call: keep the reservation.
    Keep,
}

/// The default rule for failed calls. The layer cannot see inside the
/// inner service, so it decides from the error's class whether Bedrock
/// admitted (and counted) the call:
///
/// | class | settlement | why |
/// |---|---|---|
/// | `Local(*)` | refund | refused by a layer below, never sent |
/// | `Throttled(RequestRate \| TokenRate \| Unspecified)` | refund | Bedrock refused admission; refused calls do not count |
/// | `Throttled(ModelOverloaded \| ModelNotReady)` | refund | refused before inference |
/// | `QuotaExceeded` | refund | refused before inference |
/// | `Client(Validation \| AccessDenied \| NotFound \| Conflict \| Other)` | refund | rejected before inference |
/// | `Client(ModelError)` | keep | the model ran and failed on the input |
/// | `Unavailable(*)` (5xx, network) | keep | may have run; Bedrock may have counted it |
/// | `ModelTimeout` | keep | the model ran |
/// | `Unknown` | keep | conservative |
///
/// A dropped response future whose call was already forwarded keeps its
/// reservation too (the request may be running at Bedrock).
pub fn default_error_settlement(class: &ErrorClass) -> ErrorSettlement {
    use tower_bedrock_core::ClientKind;
    match class {
        ErrorClass::Local(_) | ErrorClass::Throttled(_) | ErrorClass::QuotaExceeded => {
            ErrorSettlement::Refund
        }
        ErrorClass::Client(ClientKind::ModelError) => ErrorSettlement::Keep,
        ErrorClass::Client(_) => ErrorSettlement::Refund,
        _ => ErrorSettlement::Keep,
    }
}

/// Priority class of a tenant: waiting requests of interactive tenants are
/// admitted before those of batch tenants, whatever their shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Served first.
    #[default]
    Interactive,
    /// Served when no interactive request waits.
    Batch,
}

/// Learning the account's real capacity from throttles (AIMD).
///
/// When a call admitted by the budget still comes back
/// `Throttled(TokenRate)` (or `Unspecified`), the key's effective token
/// limit is multiplied by `decrease` (at most once per `cooldown`, so one
/// burst of 429s counts once); `Throttled(RequestRate)` lowers the request
/// limit the same way (the token limit when no request limit is set). The
/// limit then recovers linearly by `recovery` of the configured limit per
/// window until it is back at the configured limit, and never drops below
/// `min_factor` of it. A process sharing the account with others thus
/// converges on its real share, probing upwards slowly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// Multiplicative decrease on a throttle, in `(0, 1)`. Default 0.8.
    pub decrease: f64,
    /// Additive recovery per window, as a fraction of the configured limit,
    /// in `(0, 1]`. Default 0.05.
    pub recovery: f64,
    /// Lowest effective limit, as a fraction of the configured one, in
    /// `(0, 1]`. Default 0.05.
    pub min_factor: f64,
    /// Minimum time between two decreases. Default: a tenth of the window.
    pub cooldown: Option<Duration>,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            decrease: 0.8,
            recovery: 0.05,
            min_factor: 0.05,
            cooldown: None,
        }
    }
}

pub(crate) struct Config {
    pub(crate) spec: WindowSpec,
    default_limits: Limits,
    key_limits: HashMap<String, Limits>,
    pub(crate) policy: ReservationPolicy,
    pub(crate) max_wait: Duration,
    adaptive: Option<Adaptive>,
    pub(crate) on_error: fn(&ErrorClass) -> ErrorSettlement,
    pub(crate) pacing: bool,
}

/// Builds a [`Budget`]. See [`Budget::builder`].
#[derive(Debug, Clone)]
pub struct BudgetBuilder {
    spec: WindowSpec,
    day: Option<Duration>,
    limits: Limits,
    key_limits: Vec<(String, Limits)>,
    policy: ReservationPolicy,
    max_wait: Duration,
    adaptive: Option<Adaptive>,
    on_error: fn(&ErrorClass) -> ErrorSettlement,
    pacing: bool,
}

impl BudgetBuilder {
    /// Window length for the token and request limits (60 s by default).
    pub fn window(mut self, window: Duration) -> Self {
        self.spec.window = window;
        self
    }

    /// Sub-windows per window (100 by default): the sliding window's
    /// granularity. Must divide the window into whole nanoseconds. More is closer to an exact sliding log (throughput
    /// under backlog is `n / (n + 1)` of the limit) and costs 16 bytes per
    /// sub-window and key.
    pub fn sub_windows(mut self, n: u32) -> Self {
        self.spec.sub_windows = n;
        self
    }

    /// Length of the daily window (1440 windows by default).
    pub fn day_length(mut self, day: Duration) -> Self {
        self.day = Some(day);
        self
    }

    /// Sub-windows of the daily window (24 by default).
    pub fn day_sub_windows(mut self, n: u32) -> Self {
        self.spec.day_sub_windows = n;
        self
    }

    /// Tokens per window for every key without limits of its own (TPM).
    pub fn tokens_per_window(mut self, tokens: u64) -> Self {
        self.limits.tokens = tokens;
        self
    }

    /// Requests per window for every key without limits of its own (RPM).
    pub fn requests_per_window(mut self, requests: u64) -> Self {
        self.limits.requests = Some(requests);
        self
    }

    /// Tokens per day for every key without limits of its own.
    pub fn tokens_per_day(mut self, tokens: u64) -> Self {
        self.limits.day_tokens = Some(tokens);
        self
    }

    /// Limits of one key (a model id, with the default key extractor).
    pub fn key_limits(mut self, key: impl Into<String>, limits: Limits) -> Self {
        self.key_limits.push((key.into(), limits));
        self
    }

    /// Longest a request waits for room before it is shed (30 s by
    /// default), counted from the first poll of its response future. Zero
    /// sheds at once when there is no room.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Output tokens reserved for requests without `max_tokens` (4096 by
    /// default; Bedrock reserves the model's maximum).
    pub fn default_max_output_tokens(mut self, tokens: u64) -> Self {
        self.policy.set_default_max_output(tokens);
        self
    }

    /// Output tokens reserved for requests without `max_tokens` to models
    /// whose base id starts with `prefix`.
    pub fn max_output_tokens_for(mut self, prefix: &str, tokens: u64) -> Self {
        self.policy.add_max_output(prefix, tokens);
        self
    }

    /// Output burndown rate of models whose base id starts with `prefix`
    /// (overrides the default: 5 for Claude 4, 1 otherwise).
    pub fn burndown_for(mut self, prefix: &str, rate: u64) -> Self {
        self.policy.add_burndown(prefix, rate);
        self
    }

    /// Adaptive-limit parameters (on by default with [`Adaptive::default`]).
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Turns the adaptive limit off: throttles do not lower the limits.
    pub fn fixed_limits(mut self) -> Self {
        self.adaptive = None;
        self
    }

    /// Whether waiting requests are admitted no faster than the limit's
    /// rate (on by default).
    ///
    /// A sliding window frees room in the same pattern it was filled: a
    /// burst that filled the window at its start frees it in a burst one
    /// window later, and a backlog drained at once repeats that burst
    /// forever, leaving requests that arrive between bursts waiting most of
    /// a window. With pacing, requests that had to wait are admitted at
    /// most at `limit / window` (with a burst of two sub-windows' worth), so
    /// the admissions of a busy key spread over the window within a few
    /// windows and a newcomer finds room within a sub-window or two. Room
    /// not used at once is not lost: it stays in the window. Requests that
    /// find no queue are admitted as soon as the window has room (and count
    /// against the pace).
    pub fn pace_backlog(mut self, pacing: bool) -> Self {
        self.pacing = pacing;
        self
    }

    /// Replaces the rule deciding whether a failed call is refunded
    /// ([`default_error_settlement`] by default).
    pub fn on_error(mut self, rule: fn(&ErrorClass) -> ErrorSettlement) -> Self {
        self.on_error = rule;
        self
    }

    /// Builds a budget kept in this process's memory.
    pub fn build(self) -> Result<Budget<InMemoryStore>, BuildError> {
        self.build_with_store(InMemoryStore::new())
    }

    /// Builds a budget kept in `store`.
    pub fn build_with_store<St: BudgetStore>(self, store: St) -> Result<Budget<St>, BuildError> {
        let mut spec = self.spec;
        if spec.window.is_zero() {
            return Err(BuildError::ZeroWindow);
        }
        spec.day = match self.day {
            Some(d) => d,
            None => spec.window.saturating_mul(1440),
        };
        if spec.day.is_zero() {
            return Err(BuildError::ZeroDay);
        }
        check_sub_windows("window", spec.window, spec.sub_windows)?;
        check_sub_windows("day", spec.day, spec.day_sub_windows)?;
        check_limits("default", &self.limits)?;
        let mut key_limits = HashMap::new();
        for (k, l) in self.key_limits {
            check_limits(&k, &l)?;
            key_limits.insert(k, l);
        }
        if let Some(a) = &self.adaptive {
            if !(a.decrease > 0.0 && a.decrease < 1.0) {
                return Err(BuildError::BadAdaptive("decrease must be in (0, 1)"));
            }
            if !(a.recovery > 0.0 && a.recovery <= 1.0) {
                return Err(BuildError::BadAdaptive("recovery must be in (0, 1]"));
            }
            if !(a.min_factor > 0.0 && a.min_factor <= 1.0) {
                return Err(BuildError::BadAdaptive("min_factor must be in (0, 1]"));
            }
        }
        let default_tenant = Arc::new(TenantInfo {
            name: Arc::from("default"),
            index: 0,
            weight: 1,
            priority: Priority::Interactive,
        });
        Ok(Budget {
            shared: Arc::new(Shared {
                store,
                config: Arc::new(Config {
                    spec,
                    default_limits: self.limits,
                    key_limits,
                    policy: self.policy,
                    max_wait: self.max_wait,
                    adaptive: self.adaptive,
                    on_error: self.on_error,
                    pacing: self.pacing,
                }),
                keys: RwLock::new(HashMap::new()),
                tenants: Mutex::new(vec![default_tenant]),
            }),
        })
    }
}

fn check_sub_windows(window: &'static str, len: Duration, n: u32) -> Result<(), BuildError> {
    if n == 0 || n > 100_000 || (len / n).is_zero() || !len.as_nanos().is_multiple_of(u128::from(n))
    {
        return Err(BuildError::BadSubWindows {
            window,
            sub_windows: n,
        });
    }
    Ok(())
}

fn check_limits(key: &str, l: &Limits) -> Result<(), BuildError> {
    let zero = |window| BuildError::ZeroLimit {
        key: key.to_owned(),
        window,
    };
    if l.tokens == 0 {
        return Err(zero("tokens"));
    }
    if l.requests == Some(0) {
        return Err(zero("requests"));
    }
    if l.day_tokens == Some(0) {
        return Err(zero("day"));
    }
    Ok(())
}

/// A token budget shared by every layer, tenant and clone made from it.
///
/// Holds the limits per key (the model id by default), the store that
/// counts the windows ([`InMemoryStore`] unless built with
/// [`BudgetBuilder::build_with_store`]), the waiting queues and the adaptive
/// limits. Cloning is cheap: clones share everything.
pub struct Budget<St: BudgetStore = InMemoryStore> {
    pub(crate) shared: Arc<Shared<St>>,
}

impl<St: BudgetStore> Clone for Budget<St> {
    fn clone(&self) -> Self {
        Budget {
            shared: self.shared.clone(),
        }
    }
}

impl<St: BudgetStore> std::fmt::Debug for Budget<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("spec", &self.shared.config.spec)
            .field("limits", &self.shared.config.default_limits)
            .field("keys", &self.shared.keys.read().len())
            .finish()
    }
}

pub(crate) struct Shared<St: BudgetStore> {
    store: St,
    pub(crate) config: Arc<Config>,
    keys: RwLock<KeyMap<St::Key>>,
    tenants: Mutex<Vec<Arc<TenantInfo>>>,
}

type KeyMap<K> = HashMap<Box<str>, Arc<KeyState<K>>>;

#[derive(Debug)]
pub(crate) struct TenantInfo {
    pub(crate) name: Arc<str>,
    pub(crate) index: usize,
    weight: u32,
    priority: Priority,
}

impl TenantInfo {
    /// What a store is told about the tenant.
    pub(crate) fn tag(&self) -> crate::store::TenantTag<'_> {
        crate::store::TenantTag {
            name: &self.name,
            weight: self.weight,
        }
    }
}

/// A tenant of a [`Budget`]: one application with its weighted share of
/// the shared quota. Make its layer with [`Tenant::layer`].
#[derive(Debug)]
pub struct Tenant<St: BudgetStore = InMemoryStore> {
    budget: Budget<St>,
    info: Arc<TenantInfo>,
}

impl<St: BudgetStore> Clone for Tenant<St> {
    fn clone(&self) -> Self {
        Tenant {
            budget: self.budget.clone(),
            info: self.info.clone(),
        }
    }
}

impl<St: BudgetStore> Tenant<St> {
    /// The tenant's layer.
    pub fn layer(&self) -> TokenBudgetLayer<St> {
        TokenBudgetLayer::new(self.budget.clone(), self.info.clone())
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

impl Budget<InMemoryStore> {
    /// A builder with the defaults: 60 s windows of 100 sub-windows, a
    /// 1440-window day, 30 s maximum wait, adaptive limits on. The token
    /// limit must be set ([`BudgetBuilder::tokens_per_window`]), or every
    /// key given its own.
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder {
            spec: WindowSpec::default(),
            day: None,
            limits: Limits::tokens(0),
            key_limits: Vec::new(),
            policy: ReservationPolicy::default(),
            max_wait: Duration::from_secs(30),
            adaptive: Some(Adaptive::default()),
            on_error: default_error_settlement,
            pacing: true,
        }
    }
}

impl<St: BudgetStore> Budget<St> {
    /// The layer of the default tenant (named `default`, weight 1).
    pub fn layer(&self) -> TokenBudgetLayer<St> {
        let info = self.shared.tenants.lock()[0].clone();
        TokenBudgetLayer::new(self.clone(), info)
    }

    /// The tenant `name` with `weight` (its share under contention is
    /// `weight / sum of the weights of the tenants that want more`), in the
    /// interactive priority class. Asking again for the same name gives the
    /// same tenant.
    pub fn tenant(&self, name: &str, weight: u32) -> Result<Tenant<St>, BuildError> {
        self.tenant_with_priority(name, weight, Priority::Interactive)
    }

    /// Like [`tenant`](Self::tenant), in a given priority class.
    pub fn tenant_with_priority(
        &self,
        name: &str,
        weight: u32,
        priority: Priority,
    ) -> Result<Tenant<St>, BuildError> {
        if weight == 0 {
            return Err(BuildError::ZeroWeight {
                tenant: name.to_owned(),
            });
        }
        let mut tenants = self.shared.tenants.lock();
        if let Some(t) = tenants.iter().find(|t| &*t.name == name) {
            if t.weight != weight || t.priority != priority {
                return Err(BuildError::TenantConflict {
                    tenant: name.to_owned(),
                });
            }
            return Ok(Tenant {
                budget: self.clone(),
                info: t.clone(),
            });
        }
        let info = Arc::new(TenantInfo {
            name: Arc::from(name),
            index: tenants.len(),
            weight,
            priority,
        });
        tenants.push(info.clone());
        Ok(Tenant {
            budget: self.clone(),
            info,
        })
    }

    /// The window geometry.
    pub fn spec(&self) -> WindowSpec {
        self.shared.config.spec
    }

    /// The configured limits of `key`.
    pub fn limits(&self, key: &str) -> Limits {
        self.shared.config.limits_of(key)
    }

    /// The store's handle of `key` (created on first use).
    pub fn store_key(&self, key: &str) -> St::Key
    where
        St::Key: Clone,
    {
        self.shared.key_state(key).store.clone()
    }

    /// Approximate bytes this process holds for `key` (its windows in the
    /// store, when the store keeps them here, plus the budget's own per-key
    /// state: queues, tenant counters, adaptive factors, metric handles).
    /// Constant in the traffic; grows only with the number of tenants that
    /// used the key and the requests waiting. `None` for a key never used.
    pub fn key_memory_bytes(&self, key: &str) -> Option<usize> {
        let ks = self.shared.keys.read().get(key).cloned()?;
        let sched = ks.sched.lock();
        let tenants = sched.tenants.capacity() * std::mem::size_of::<TenantSlot>()
            + sched
                .tenants
                .iter()
                .map(|t| t.queue.capacity() * std::mem::size_of::<Waiting>())
                .sum::<usize>();
        let model = sched.model.as_ref().map_or(0, |(m, _, _)| m.len());
        Some(
            ks.store.memory_bytes()
                + std::mem::size_of::<KeyState<St::Key>>()
                + 2 * std::mem::size_of::<usize>()
                + 2 * key.len() // the map's key and the state's name
                + std::mem::size_of::<(Box<str>, Arc<()>)>()
                + tenants
                + model,
        )
    }

    /// Introspection of one key: usage, reservations, limits, utilisation,
    /// waiting requests and each tenant's share. `None` for a key never
    /// used.
    pub fn snapshot(&self, key: &str) -> Option<KeySnapshot> {
        let ks = self.shared.keys.read().get(key).cloned()?;
        Some(ks.snapshot(&self.shared.tenants.lock()))
    }

    /// Introspection of every key used so far, sorted by key.
    pub fn snapshots(&self) -> Vec<KeySnapshot> {
        let keys: Vec<_> = self.shared.keys.read().values().cloned().collect();
        let tenants = self.shared.tenants.lock().clone();
        let mut v: Vec<_> = keys.iter().map(|k| k.snapshot(&tenants)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}

impl Config {
    fn limits_of(&self, key: &str) -> Limits {
        self.key_limits
            .get(key)
            .copied()
            .unwrap_or(self.default_limits)
    }

    fn cooldown(&self, a: &Adaptive) -> Duration {
        a.cooldown.unwrap_or(self.spec.window / 10)
    }
}

impl<St: BudgetStore> Shared<St> {
    pub(crate) fn key_state(&self, key: &str) -> Arc<KeyState<St::Key>> {
        if let Some(ks) = self.keys.read().get(key) {
            return ks.clone();
        }
        let mut keys = self.keys.write();
        keys.entry(Box::from(key))
            .or_insert_with(|| {
                Arc::new(KeyState::new(
                    key,
                    self.store.key(key, &self.config.spec),
                    self.config.clone(),
                ))
            })
            .clone()
    }
}

/// A point-in-time view of one budget key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeySnapshot {
    /// The key (model id by default).
    pub key: String,
    /// The configured limits.
    pub limits: Limits,
    /// The effective limits now (lowered by throttles, see [`Adaptive`]).
    pub effective: Limits,
    /// Tokens charged in the current window: settled usage plus
    /// reservations.
    pub tokens: u64,
    /// Tokens reserved by calls in flight.
    pub reserved_tokens: u64,
    /// Calls in flight.
    pub reserved_requests: u64,
    /// Requests charged in the current window.
    pub requests: u64,
    /// Tokens charged in the current day.
    pub day_tokens: u64,
    /// `tokens / effective.tokens`.
    pub utilization: f64,
    /// Requests waiting for room.
    pub waiting: usize,
    /// Per tenant that used this key.
    pub tenants: Vec<TenantSnapshot>,
}

impl KeySnapshot {
    /// Tokens used by settled calls in the current window (charged minus
    /// reserved).
    pub fn used_tokens(&self) -> u64 {
        self.tokens.saturating_sub(self.reserved_tokens)
    }
}

/// One tenant's activity on one key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TenantSnapshot {
    /// The tenant.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Its priority class.
    pub priority: Priority,
    /// Requests admitted since the key was first used.
    pub admitted_requests: u64,
    /// Tokens reserved at admission since the key was first used.
    pub admitted_tokens: u64,
    /// Requests that had to wait.
    pub waits: u64,
    /// Requests shed.
    pub sheds: u64,
    /// Requests waiting now.
    pub waiting: usize,
    /// Its share of the key's recent admissions (exponentially decayed over
    /// one window; by requests or tokens, whichever is the scarcer
    /// resource), in `[0, 1]`.
    pub recent_share: f64,
}

/// An exponentially decayed counter (time constant: one window).
#[derive(Debug, Clone, Copy, Default)]
struct Decayed {
    value: f64,
    at: Option<Instant>,
}

impl Decayed {
    fn get(&self, now: Instant, tau: f64) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                self.value * (-(now.saturating_duration_since(at).as_secs_f64()) / tau).exp()
            }
        }
    }

    fn add(&mut self, x: f64, now: Instant, tau: f64) {
        self.value = self.get(now, tau) + x;
        self.at = Some(now);
    }
}

struct Waiting {
    id: u64,
    waker: Option<Waker>,
}

struct TenantSlot {
    weight: f64,
    priority: Priority,
    queue: VecDeque<Waiting>,
    tokens: Decayed,
    requests: Decayed,
    admitted: Charge,
    waits: u64,
    sheds: u64,
}

#[derive(Debug, Clone, Copy)]
struct Factor {
    value: f64,
    at: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl Factor {
    const FULL: Factor = Factor {
        value: 1.0,
        at: None,
        last_decrease: None,
    };

    fn current(&self, now: Instant, a: &Adaptive, window: Duration) -> f64 {
        match self.at {
            None => self.value,
            Some(at) => {
                let windows =
                    now.saturating_duration_since(at).as_secs_f64() / window.as_secs_f64();
                (self.value + a.recovery * windows).min(1.0)
            }
        }
    }

    fn decrease(
        &mut self,
        now: Instant,
        a: &Adaptive,
        window: Duration,
        cooldown: Duration,
    ) -> bool {
        if self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < cooldown)
        {
            return false;
        }
        self.value = (self.current(now, a, window) * a.decrease).max(a.min_factor);
        self.at = Some(now);
        self.last_decrease = Some(now);
        true
    }
}

/// A token bucket pacing the admission of waiting requests at the limit's
/// rate. Its level may go negative (a large request or direct admissions
/// run ahead of the pace), down to minus one whole limit.
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    level: f64,
    at: Option<Instant>,
}

/// Rate (units per second) and burst of a pace for `limit` per window.
fn pace_params(limit: u64, spec: &WindowSpec) -> (f64, f64) {
    let limit = limit as f64;
    let rate = limit / spec.window.as_secs_f64();
    let burst = (2.0 * limit / f64::from(spec.sub_windows.max(1))).max(1.0);
    (rate, burst)
}

impl Pace {
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        match self.at {
            None => burst,
            Some(at) => {
                (self.level + rate * now.saturating_duration_since(at).as_secs_f64()).min(burst)
            }
        }
    }

    /// When the level will allow `amount` (capped at the burst), if not now.
    fn ready_at(
        &self,
        now: Instant,
        limit: u64,
        spec: &WindowSpec,
        amount: u64,
    ) -> Option<Instant> {
        let (rate, burst) = pace_params(limit, spec);
        let need = (amount as f64).min(burst);
        let level = self.level(now, rate, burst);
        if level >= need || rate <= 0.0 {
            None
        } else {
            Some(now + Duration::from_secs_f64((need - level) / rate))
        }
    }

    fn consume(&mut self, now: Instant, limit: u64, spec: &WindowSpec, amount: u64) {
        let (rate, burst) = pace_params(limit, spec);
        self.level = (self.level(now, rate, burst) - amount as f64).max(-(limit as f64));
        self.at = Some(now);
    }
}

fn scale(limit: u64, f: f64) -> u64 {
    if f >= 1.0 {
        limit
    } else {
        // Truncation is intended: the effective limit rounds down.
        ((limit as f64 * f) as u64).max(1)
    }
}

pub(crate) struct Sched {
    tenants: Vec<TenantSlot>,
    waiting: usize,
    next_id: u64,
    /// Mirror of `waiting`, readable without the lock.
    waiting_mirror: Arc<AtomicUsize>,
    /// When the last refusal expected room.
    pub(crate) room_at: Option<Instant>,
    tokens_factor: Factor,
    requests_factor: Factor,
    pace_tokens: Pace,
    pace_requests: Pace,
    /// Burndown and default output of the last model seen on this key.
    model: Option<(Box<str>, u64, u64)>,
}

struct Gauges {
    tokens: Gauge,
    requests: Gauge,
    day: Gauge,
    effective: Gauge,
}

/// Everything the budget keeps for one key.
pub(crate) struct KeyState<K> {
    pub(crate) name: Arc<str>,
    pub(crate) store: K,
    pub(crate) config: Arc<Config>,
    configured: Limits,
    pub(crate) sched: Mutex<Sched>,
    gauges: Gauges,
    /// Bumped by every settlement that frees room: waiters that were
    /// refused retry when it moved.
    pub(crate) epoch: AtomicU64,
    /// Requests waiting (mirror of the queues' length).
    waiting: Arc<AtomicUsize>,
    /// Nanoseconds since `born` before which the gauges are not updated
    /// again (at most once per sub-window).
    gauge_due: AtomicU64,
    born: Instant,
    /// Burndown and default output of the model named like the key (the
    /// default key extractor).
    name_rules: (u64, u64),
}

impl<K: StoreKey> KeyState<K> {
    fn new(key: &str, store: K, config: Arc<Config>) -> Self {
        let configured = config.limits_of(key);
        let name: Arc<str> = Arc::from(key);
        let gauge = |w: &'static str| metrics::gauge!(names::BUDGET_UTILIZATION, "model" => name.to_string(), "window" => w);
        let gauges = Gauges {
            tokens: gauge("tokens"),
            requests: gauge("requests"),
            day: gauge("day"),
            effective: metrics::gauge!(names::BUDGET_EFFECTIVE_LIMIT, "model" => name.to_string()),
        };
        gauges.effective.set(configured.tokens as f64);
        let waiting = Arc::new(AtomicUsize::new(0));
        let name_rules = (
            config.policy.burndown(key),
            config.policy.default_max_output(key),
        );
        KeyState {
            name,
            store,
            config,
            configured,
            sched: Mutex::new(Sched {
                tenants: Vec::new(),
                waiting: 0,
                next_id: 0,
                waiting_mirror: waiting.clone(),
                room_at: None,
                tokens_factor: Factor::FULL,
                requests_factor: Factor::FULL,
                pace_tokens: Pace::default(),
                pace_requests: Pace::default(),
                model: None,
            }),
            gauges,
            epoch: AtomicU64::new(0),
            waiting,
            gauge_due: AtomicU64::new(0),
            born: Instant::now(),
            name_rules,
        }
    }

    pub(crate) fn configured(&self) -> Limits {
        self.configured
    }

    /// Burndown rate and default output of `model`, cached per key.
    pub(crate) fn model_rules(&self, model: &str) -> (u64, u64) {
        if model == &*self.name {
            return self.name_rules;
        }
        let mut s = self.sched.lock();
        if let Some((m, b, o)) = &s.model
            && &**m == model
        {
            return (*b, *o);
        }
        let p = &self.config.policy;
        let (b, o) = (p.burndown(model), p.default_max_output(model));
        s.model = Some((Box::from(model), b, o));
        (b, o)
    }

    /// A throttle came back despite admission: lower the effective limit.
    pub(crate) fn on_throttle(&self, kind: ThrottleKind, now: Instant) {
        let Some(a) = self.config.adaptive else {
            return;
        };
        let window = self.config.spec.window;
        let cooldown = self.config.cooldown(&a);
        let mut s = self.sched.lock();
        let (factor, which) = match kind {
            ThrottleKind::RequestRate if self.configured.requests.is_some() => {
                (&mut s.requests_factor, "requests")
            }
            ThrottleKind::RequestRate | ThrottleKind::TokenRate | ThrottleKind::Unspecified => {
                (&mut s.tokens_factor, "tokens")
            }
            _ => return,
        };
        if factor.decrease(now, &a, window, cooldown) {
            let f = factor.value;
            let limits = s.limits(now, &self.config, self.configured);
            drop(s);
            self.gauges.effective.set(limits.tokens as f64);
            tracing::info!(
                key = %self.name,
                window = which,
                factor = f,
                effective_tokens = limits.tokens,
                effective_requests = limits.requests,
                "budget lowered after a rate throttle"
            );
        }
    }

    /// After a settlement: room may have appeared, wake the head waiter.
    pub(crate) fn on_settled(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waker =
            self.sched
                .lock()
                .take_head_waker(Instant::now(), &self.config, self.configured);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Updates the utilisation gauges, at most once per sub-window.
    pub(crate) fn update_gauges(&self, now: Instant) {
        let at =
            u64::try_from(now.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX);
        let due = self.gauge_due.load(Ordering::Relaxed);
        let next = at.saturating_add(
            u64::try_from(self.config.spec.granularity().as_nanos()).unwrap_or(u64::MAX),
        );
        if at < due
            || self
                .gauge_due
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.write_gauges(now);
    }

    fn write_gauges(&self, now: Instant) {
        let snap = self.store.gauge_snapshot(now);
        let limits = self.sched.lock().limits(now, &self.config, self.configured);
        self.gauges.tokens.set(ratio(snap.tokens, limits.tokens));
        self.gauges.effective.set(limits.tokens as f64);
        if let Some(r) = limits.requests {
            self.gauges.requests.set(ratio(snap.requests, r));
        }
        if let Some(d) = limits.day_tokens {
            self.gauges.day.set(ratio(snap.day_tokens, d));
        }
    }

    fn snapshot(&self, tenants: &[Arc<TenantInfo>]) -> KeySnapshot {
        let now = Instant::now();
        let st: StoreSnapshot = self.store.snapshot(now);
        let s = self.sched.lock();
        let effective = s.limits(now, &self.config, self.configured);
        let tau = self.config.spec.window.as_secs_f64();
        let scores: Vec<f64> = s
            .tenants
            .iter()
            // Unweighted recent usage (dominant resource) of each tenant.
            .map(|t| s.cost(t, now, tau, effective) * t.weight)
            .collect();
        let total: f64 = scores.iter().sum();
        let tenants = s
            .tenants
            .iter()
            .zip(&scores)
            .enumerate()
            .filter(|(_, (t, _))| {
                t.admitted.requests > 0 || t.waits > 0 || t.sheds > 0 || !t.queue.is_empty()
            })
            .map(|(i, (t, score))| {
                let info = tenants.get(i);
                TenantSnapshot {
                    name: info.map_or_else(String::new, |i| i.name.to_string()),
                    weight: info.map_or(1, |i| i.weight),
                    priority: t.priority,
                    admitted_requests: t.admitted.requests,
                    admitted_tokens: t.admitted.tokens,
                    waits: t.waits,
                    sheds: t.sheds,
                    waiting: t.queue.len(),
                    recent_share: if total > 0.0 { score / total } else { 0.0 },
                }
            })
            .collect();
        KeySnapshot {
            key: self.name.to_string(),
            limits: self.configured,
            effective,
            tokens: st.tokens,
            reserved_tokens: st.reserved_tokens,
            reserved_requests: st.reserved_requests,
            requests: st.requests,
            day_tokens: st.day_tokens,
            utilization: ratio(st.tokens, effective.tokens),
            waiting: s.waiting,
            tenants,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Sched {
    /// The effective limits at `now`.
    pub(crate) fn limits(&self, now: Instant, config: &Config, configured: Limits) -> Limits {
        let Some(a) = &config.adaptive else {
            return configured;
        };
        let w = config.spec.window;
        Limits {
            tokens: scale(configured.tokens, self.tokens_factor.current(now, a, w)),
            requests: configured
                .requests
                .map(|r| scale(r, self.requests_factor.current(now, a, w))),
            day_tokens: configured.day_tokens,
        }
    }

    /// When pacing allows a waiting request of `charge` to be admitted, if
    /// not now (always now when pacing is off).
    pub(crate) fn pace_wait(
        &self,
        now: Instant,
        config: &Config,
        limits: Limits,
        charge: Charge,
    ) -> Option<Instant> {
        if !config.pacing {
            return None;
        }
        let spec = &config.spec;
        let tokens = self
            .pace_tokens
            .ready_at(now, limits.tokens, spec, charge.tokens);
        let requests = limits
            .requests
            .and_then(|r| self.pace_requests.ready_at(now, r, spec, charge.requests));
        tokens.max(requests)
    }

    /// Counts an admission against the pace.
    pub(crate) fn pace_consume(
        &mut self,
        now: Instant,
        config: &Config,
        limits: Limits,
        charge: Charge,
    ) {
        if !config.pacing {
            return;
        }
        let spec = &config.spec;
        self.pace_tokens
            .consume(now, limits.tokens, spec, charge.tokens);
        if let Some(r) = limits.requests {
            self.pace_requests.consume(now, r, spec, charge.requests);
        }
    }

    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting > 0
    }

    fn slot(&mut self, tenant: &TenantInfo) -> &mut TenantSlot {
        while self.tenants.len() <= tenant.index {
            self.tenants.push(TenantSlot {
                weight: 1.0,
                priority: Priority::Interactive,
                queue: VecDeque::new(),
                tokens: Decayed::default(),
                requests: Decayed::default(),
                admitted: Charge::ZERO,
                waits: 0,
                sheds: 0,
            });
        }
        let t = &mut self.tenants[tenant.index];
        t.weight = f64::from(tenant.weight);
        t.priority = tenant.priority;
        t
    }

    /// Joins the tenant's queue; returns the waiter's id.
    pub(crate) fn enqueue(&mut self, tenant: &TenantInfo) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let t = self.slot(tenant);
        t.queue.push_back(Waiting { id, waker: None });
        t.waits += 1;
        self.waiting += 1;
        self.waiting_mirror.store(self.waiting, Ordering::SeqCst);
        id
    }

    /// Leaves the queue (admitted, shed or dropped).
    pub(crate) fn remove(&mut self, tenant: usize, id: u64) {
        if let Some(t) = self.tenants.get_mut(tenant)
            && let Some(pos) = t.queue.iter().position(|w| w.id == id)
        {
            t.queue.remove(pos);
            self.waiting -= 1;
            self.waiting_mirror.store(self.waiting, Ordering::SeqCst);
        }
    }

    pub(crate) fn count_shed(&mut self, tenant: &TenantInfo) {
        self.slot(tenant).sheds += 1;
    }

    /// Weighted recent cost of a tenant: the larger of its token and
    /// request shares of the limits (dominant resource), over its weight.
    fn cost(&self, t: &TenantSlot, now: Instant, tau: f64, limits: Limits) -> f64 {
        let tok = t.tokens.get(now, tau) / limits.tokens.max(1) as f64;
        let req = limits
            .requests
            .map_or(0.0, |r| t.requests.get(now, tau) / r.max(1) as f64);
        tok.max(req) / t.weight
    }

    /// The waiter allowed to try next: the front of the queue of the
    /// tenant in the highest priority class with the lowest weighted recent
    /// cost (ties: the earliest arrival). With one tenant, plain FIFO.
    pub(crate) fn head(
        &self,
        now: Instant,
        config: &Config,
        limits: Limits,
    ) -> Option<(usize, u64)> {
        if self.waiting == 0 {
            return None;
        }
        let tau = config.spec.window.as_secs_f64();
        let mut best: Option<(usize, Priority, f64, u64)> = None;
        for (i, t) in self.tenants.iter().enumerate() {
            let Some(front) = t.queue.front() else {
                continue;
            };
            let cost = self.cost(t, now, tau, limits);
            let better = match best {
                None => true,
                Some((_, p, c, id)) => (t.priority, cost, front.id) < (p, c, id),
            };
            if better {
                best = Some((i, t.priority, cost, front.id));
            }
        }
        best.map(|(i, _, _, id)| (i, id))
    }

    pub(crate) fn take_head_waker(
        &mut self,
        now: Instant,
        config: &Config,
        limits: Limits,
    ) -> Option<Waker> {
        let (t, _) = self.head(now, config, limits)?;
        self.tenants[t].queue.front_mut()?.waker.take()
    }

    pub(crate) fn set_waker(&mut self, tenant: usize, id: u64, waker: &Waker) {
        if let Some(w) = self
            .tenants
            .get_mut(tenant)
            .and_then(|t| t.queue.iter_mut().find(|w| w.id == id))
        {
            match &mut w.waker {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
    }

    /// Records an admission for fairness and introspection.
    pub(crate) fn admitted(&mut self, tenant: &TenantInfo, charge: Charge, now: Instant, tau: f64) {
        let t = self.slot(tenant);
        t.tokens.add(charge.tokens as f64, now, tau);
        t.requests.add(charge.requests as f64, now, tau);
        t.admitted.tokens = t.admitted.tokens.saturating_add(charge.tokens);
        t.admitted.requests = t.admitted.requests.saturating_add(charge.requests);
    }
}
