//! The scenario description: traffic, quotas and faults, in scenario
//! minutes. Built-in scenarios are constructors; users write their own as
//! TOML (see [`Scenario::from_toml_str`] and `crates/bench/scenarios/`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower_bedrock_emulator::{EmulatorConfig, FaultKind, FaultRule, Latency, Quota};

/// Why a scenario is invalid.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The TOML text does not parse or has unknown fields.
    #[error("scenario file: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("scenario {scenario}: {reason}")]
    Invalid {
        /// Scenario name.
        scenario: String,
        /// What is wrong.
        reason: String,
    },
    /// The emulator refused the derived configuration.
    #[error("scenario {0}: emulator configuration: {1}")]
    Emulator(String, String),
}

/// One model and its quota (per scenario minute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model id as sent to Bedrock.
    pub id: String,
    /// Requests per minute (omitted: not enforced, as in current Bedrock).
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute (input + output x burndown).
    pub tpm: u64,
}

/// One application: its traffic, request size and the process it runs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Name (also the tenant name in the stack's budget).
    pub name: String,
    /// Requests per minute, minute by minute; the last value repeats.
    pub rpm: Vec<f64>,
    /// Input tokens of every request.
    #[serde(default = "default_input")]
    pub input_tokens: u64,
    /// `max_tokens` of every request (the emulator answers
    /// `min(output_tokens, max_tokens)` tokens).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
    /// Process (client) the application runs in, from 0 to `processes - 1`.
    #[serde(default)]
    pub process: usize,
}

fn default_input() -> u64 {
    300
}
fn default_max_tokens() -> u64 {
    200
}

/// A fault active during some minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What goes wrong: `overloaded`, `unavailable`, `too_many_requests`,
    /// `internal_error`, ... (the emulator's fault kinds).
    pub kind: String,
    /// Share of requests hit, 0..=1.
    #[serde(default = "one")]
    pub rate: f64,
    /// Model hit (omitted: the primary model).
    #[serde(default)]
    pub model: Option<String>,
    /// In-stream kinds (`stream_throttle`, `stream_unavailable`,
    /// `stream_error`, ...): events sent before the exception (0: before
    /// the first event, which the stack treats as the call's failure).
    #[serde(default)]
    pub after_events: Option<u32>,
    /// First minute (0-based).
    #[serde(default)]
    pub from_minute: usize,
    /// Minutes it lasts (omitted: to the end).
    #[serde(default)]
    pub minutes: Option<usize>,
}

fn one() -> f64 {
    1.0
}

/// A scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (file names of the outputs).
    pub name: String,
    /// One line for the table header.
    #[serde(default)]
    pub description: String,
    /// Scenario minutes of traffic.
    pub minutes: usize,
    /// Wall time of one scenario minute, in milliseconds (the emulator's
    /// quota window; every latency and client wait is scaled alike).
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Scenario minutes allowed after the traffic ends for calls still
    /// waiting or retrying; calls not finished then count as lost.
    #[serde(default = "default_drain")]
    pub drain_minutes: usize,
    /// Seed of the traffic, the emulator and the clients.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Tokens of every answer (capped by each request's `max_tokens`).
    #[serde(default = "default_output")]
    pub output_tokens: u64,
    /// Time to first token, in scenario milliseconds.
    #[serde(default = "default_ttft")]
    pub ttft_ms: u64,
    /// Time per output token, in scenario milliseconds.
    #[serde(default = "default_per_token")]
    pub per_token_ms: f64,
    /// The apps call ConverseStream (and read each stream to its end)
    /// instead of Converse; the table then reports the time to the first
    /// event beside the total latency.
    #[serde(default)]
    pub streaming: bool,
    /// Client processes sharing the quota (apps name theirs).
    #[serde(default = "default_processes")]
    pub processes: usize,
    /// The stack's budget: scenario minutes a call may wait for room
    /// before it is refused (`BudgetExhausted`). Longer waits serve a
    /// peak's backlog later instead of losing it.
    #[serde(default = "default_max_wait")]
    pub stack_max_wait_minutes: f64,
    /// Models: the first is the one the apps call.
    pub models: Vec<ModelSpec>,
    /// A fallback model id (one of `models`) for the clients that have one.
    #[serde(default)]
    pub fallback: Option<String>,
    /// The applications.
    pub apps: Vec<AppSpec>,
    /// Faults.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

fn default_window_ms() -> u64 {
    1000
}
fn default_drain() -> usize {
    3
}
fn default_seed() -> u64 {
    42
}
fn default_output() -> u64 {
    60
}
fn default_ttft() -> u64 {
    400
}
fn default_per_token() -> f64 {
    15.0
}
fn default_processes() -> usize {
    1
}
fn default_max_wait() -> f64 {
    3.0
}

/// The seed's primary model (Claude 4 family: output burns down 5x),
/// through the US cross-region inference profile (its own token quota;
/// Bedrock serves Claude 4 models only through inference profiles and
/// refuses the bare model id).
pub const SONNET_4: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// A smaller fallback model.
pub const HAIKU_35: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
/// A model with a 1x burndown and room for long answers (64k output
/// tokens), for the document scenario, through its `us.` inference profile
/// (Bedrock serves it only through profiles).
pub const SONNET_37: &str = "us.anthropic.claude-3-7-sonnet-20250219-v1:0";

/// The seed's per-minute profile of its three apps: peaks of 75, 50 and 50
/// requests per minute (175 together) against a quota of 150.
const SEED_PROFILE: [[f64; 10]; 3] = [
    [40., 55., 75., 75., 75., 75., 75., 60., 45., 30.],
    [30., 40., 50., 50., 50., 50., 50., 40., 30., 20.],
    [20., 35., 50., 50., 50., 50., 50., 40., 30., 20.],
];

fn app(name: &str, rpm: &[f64], process: usize) -> AppSpec {
    AppSpec {
        name: name.into(),
        rpm: rpm.to_vec(),
        input_tokens: 300,
        max_tokens: 200,
        process,
    }
}

fn seed_apps(processes: bool) -> Vec<AppSpec> {
    ["app-a", "app-b", "app-c"]
        .iter()
        .enumerate()
        .map(|(i, n)| app(n, &SEED_PROFILE[i], if processes { i } else { 0 }))
        .collect()
}

fn base(name: &str, description: &str) -> Scenario {
    Scenario {
        name: name.into(),
        description: description.into(),
        minutes: 10,
        window_ms: default_window_ms(),
        drain_minutes: default_drain(),
        seed: default_seed(),
        output_tokens: default_output(),
        ttft_ms: default_ttft(),
        per_token_ms: default_per_token(),
        streaming: false,
        processes: 1,
        stack_max_wait_minutes: default_max_wait(),
        models: vec![ModelSpec {
            id: SONNET_4.into(),
            rpm: Some(150),
            tpm: 200_000,
        }],
        fallback: None,
        apps: vec![],
        faults: vec![],
    }
}

impl Scenario {
    /// The names of the built-in scenarios, in run order.
    pub const BUILT_IN: [&'static str; 10] = [
        "seed-peak",
        "tpm-documents",
        "overload-fallback",
        "storm-503",
        "noisy-tenant",
        "shared-quota",
        "claude4-chat",
        "claude4-chat-docs",
        "claude4-storm",
        "stream-faults",
    ];

    /// A built-in scenario by name.
    pub fn built_in(name: &str) -> Option<Scenario> {
        Some(match name {
            "seed-peak" => Self::seed_peak(),
            "tpm-documents" => Self::tpm_documents(),
            "overload-fallback" => Self::overload_fallback(),
            "storm-503" => Self::storm_503(),
            "noisy-tenant" => Self::noisy_tenant(),
            "shared-quota" => Self::shared_quota(),
            "claude4-chat" => Self::claude4_chat(),
            "claude4-chat-docs" => Self::claude4_chat_docs(),
            "claude4-storm" => Self::claude4_storm(),
            "stream-faults" => Self::stream_faults(),
            _ => return None,
        })
    }

    /// The seed's multi-app peak: 75/50/50 rpm on a quota of 150 rpm.
    pub fn seed_peak() -> Scenario {
        Scenario {
            apps: seed_apps(false),
            ..base(
                "seed-peak",
                "seed multi-app peak: 3 apps peaking at 75/50/50 rpm on 150 rpm, 200k tpm",
            )
        }
    }

    /// TPM-heavy documents: 10 requests a minute of 15k input and 5k
    /// output tokens on 200k tokens per minute (no RPM quota).
    pub fn tpm_documents() -> Scenario {
        let mut s = base(
            "tpm-documents",
            "TPM-heavy documents: 10 req/min of 15k input + 5k output on 200k tpm",
        );
        s.models = vec![ModelSpec {
            id: SONNET_37.into(),
            rpm: None,
            tpm: 200_000,
        }];
        s.output_tokens = 5_000;
        // Latencies of long answers, kept short so a run stays bounded.
        s.per_token_ms = 2.0;
        s.apps = vec![AppSpec {
            name: "docs".into(),
            rpm: vec![10.0],
            input_tokens: 15_000,
            max_tokens: 5_000,
            process: 0,
        }];
        s
    }

    /// The primary model overloaded for two minutes, a fallback model
    /// with a quota of its own.
    pub fn overload_fallback() -> Scenario {
        let mut s = base(
            "overload-fallback",
            "model overload: primary overloaded minutes 3-4 (100 rpm offered), fallback available",
        );
        s.minutes = 8;
        s.models.push(ModelSpec {
            id: HAIKU_35.into(),
            rpm: Some(200),
            tpm: 300_000,
        });
        s.fallback = Some(HAIKU_35.into());
        s.apps = vec![app("app-a", &[50.0], 0), app("app-b", &[50.0], 0)];
        s.faults = vec![FaultSpec {
            kind: "overloaded".into(),
            rate: 1.0,
            model: None,
            after_events: None,
            from_minute: 3,
            minutes: Some(2),
        }];
        s
    }

    /// A 503 storm: half of all calls answered 503 for three minutes.
    pub fn storm_503() -> Scenario {
        let mut s = base(
            "storm-503",
            "503 storm: 50 % of calls answered 503 during minutes 2-4 (100 rpm offered on 150)",
        );
        s.minutes = 8;
        s.apps = vec![app("app-a", &[50.0], 0), app("app-b", &[50.0], 0)];
        s.faults = vec![FaultSpec {
            kind: "unavailable".into(),
            rate: 0.5,
            model: None,
            after_events: None,
            from_minute: 2,
            minutes: Some(3),
        }];
        s
    }

    /// A noisy tenant (200 rpm) beside a quiet one (20 rpm) on 150 rpm.
    pub fn noisy_tenant() -> Scenario {
        let mut s = base(
            "noisy-tenant",
            "noisy tenant: 'noisy' sends 200 rpm, 'quiet' 20 rpm, quota 150 rpm",
        );
        s.minutes = 8;
        s.apps = vec![app("noisy", &[200.0], 0), app("quiet", &[20.0], 0)];
        s
    }

    /// The seed's traffic from three processes, one app each, sharing one
    /// quota.
    pub fn shared_quota() -> Scenario {
        Scenario {
            processes: 3,
            apps: seed_apps(true),
            ..base(
                "shared-quota",
                "three processes (one app each, seed traffic) sharing one 150 rpm quota",
            )
        }
    }

    /// What Bedrock users run today: a token-only quota (no RPM) on a
    /// Claude 4 cross-region inference profile (output burns down 5x), and
    /// a chat app whose `max_tokens` (8192) is far above its typical answer
    /// (300 tokens). Each call reserves `1000 + 8192 x 5` tokens at
    /// admission and settles to `1000 + 300 x 5`: the quota (1M tokens a
    /// minute) holds the settled usage of the peak (100 rpm) two and a half
    /// times over and the reservations of the calls in flight beside it, so
    /// the server throttles no one; a client-side budget that paces by the
    /// reservation would.
    pub fn claude4_chat() -> Scenario {
        let mut s = base(
            "claude4-chat",
            "token-only 1M tpm on a 5x-burndown Claude 4 profile: chat up to 100 rpm, max_tokens 8192, ~300 tokens answered",
        );
        s.minutes = 8;
        s.output_tokens = 300;
        s.models = vec![ModelSpec {
            id: SONNET_4.into(),
            rpm: None,
            tpm: 1_000_000,
        }];
        s.apps = vec![Self::claude4_chat_app()];
        s
    }

    fn claude4_chat_app() -> AppSpec {
        AppSpec {
            name: "chat".into(),
            rpm: vec![60., 80., 100., 100., 100., 100., 80., 60.],
            input_tokens: 1_000,
            max_tokens: 8_192,
            process: 0,
        }
    }

    /// [`Scenario::claude4_chat`] with a documents app beside the chat
    /// app: 6 documents a minute of 30k input tokens, the same
    /// `max_tokens` (8192) and answer size (300 tokens); settled usage
    /// about 440k of the 1M tokens a minute at the peak.
    pub fn claude4_chat_docs() -> Scenario {
        let mut s = Self::claude4_chat();
        s.name = "claude4-chat-docs".into();
        s.description = "claude4-chat plus a documents app: 6 docs/min of 30k input, max_tokens 8192, on the same 1M tpm".into();
        s.apps.push(AppSpec {
            name: "docs".into(),
            rpm: vec![6.],
            input_tokens: 30_000,
            max_tokens: 8_192,
            process: 0,
        });
        s
    }

    /// [`Scenario::claude4_chat_docs`] with three minutes (2-4) in which
    /// 30 % of the calls are answered 503.
    pub fn claude4_storm() -> Scenario {
        let mut s = Self::claude4_chat_docs();
        s.name = "claude4-storm".into();
        s.description =
            "claude4-chat-docs with 30 % of calls answered 503 during minutes 2-4".into();
        s.faults = vec![FaultSpec {
            kind: "unavailable".into(),
            rate: 0.3,
            model: None,
            after_events: None,
            from_minute: 2,
            minutes: Some(3),
        }];
        s
    }

    /// Streaming chat: every app calls ConverseStream. The chat traffic of
    /// [`Scenario::claude4_chat`] (`max_tokens` 2048) with exceptions sent
    /// inside the stream before its first event (after HTTP 200, which the
    /// SDK's own retry never sees): `throttlingException` on 25 % of the
    /// calls in minutes 2-3, `serviceUnavailableException` on 25 % in
    /// minutes 5-6.
    pub fn stream_faults() -> Scenario {
        let mut s = Self::claude4_chat();
        s.name = "stream-faults".into();
        s.description = "ConverseStream chat up to 100 rpm on 1M tpm: in-stream throttles before the first event on 25 % of calls in minutes 2-3, in-stream 503s in minutes 5-6".into();
        s.streaming = true;
        s.apps[0].max_tokens = 2_048;
        let in_stream = |kind: &str, from_minute| FaultSpec {
            kind: kind.into(),
            rate: 0.25,
            model: None,
            after_events: Some(0),
            from_minute,
            minutes: Some(2),
        };
        s.faults = vec![
            in_stream("stream_throttle", 2),
            in_stream("stream_unavailable", 5),
        ];
        s
    }

    /// Parses and validates a scenario file.
    pub fn from_toml_str(text: &str) -> Result<Scenario, SpecError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks the scenario and the emulator configuration derived from it.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |reason: String| {
            Err(SpecError::Invalid {
                scenario: self.name.clone(),
                reason,
            })
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("name must be non-empty ASCII letters, digits, '-' or '_'".into());
        }
        if self.minutes == 0 || self.minutes > 120 {
            return bad("minutes must be 1..=120".into());
        }
        if !(50..=60_000).contains(&self.window_ms) {
            return bad("window_ms must be 50..=60000".into());
        }
        if self.processes == 0 || self.processes > 16 {
            return bad("processes must be 1..=16".into());
        }
        if !(0.0..=60.0).contains(&self.stack_max_wait_minutes) {
            return bad("stack_max_wait_minutes must be 0..=60".into());
        }
        if self.models.is_empty() {
            return bad("at least one model".into());
        }
        for m in &self.models {
            if m.tpm == 0 || m.rpm == Some(0) {
                return bad(format!("model {}: quotas must be positive", m.id));
            }
        }
        if let Some(f) = &self.fallback
            && (f == &self.models[0].id || !self.models.iter().any(|m| &m.id == f))
        {
            return bad(format!(
                "fallback {f} must be one of the models, not the first"
            ));
        }
        if self.apps.is_empty() || self.apps.len() > 32 {
            return bad("1..=32 apps".into());
        }
        for a in &self.apps {
            if a.rpm.is_empty() || a.rpm.iter().any(|r| !r.is_finite() || *r < 0.0) {
                return bad(format!(
                    "app {}: rpm must be a non-empty list of rates >= 0",
                    a.name
                ));
            }
            if a.process >= self.processes {
                return bad(format!(
                    "app {}: process {} >= processes",
                    a.name, a.process
                ));
            }
            if a.max_tokens == 0 {
                return bad(format!("app {}: max_tokens must be positive", a.name));
            }
        }
        // What the server would refuse with a ValidationException on every
        // call: a bare id of a model served only through inference
        // profiles, max_tokens over the model's output limit, a prompt over
        // its context window.
        for m in &self.models {
            let base = tower_bedrock::core::model::base_model(&m.id);
            let Some(spec) = tower_bedrock_emulator::catalogue::spec(base) else {
                continue;
            };
            if spec.profile_required && m.id == spec.id {
                return bad(format!(
                    "model {}: Bedrock serves it only through an inference profile (e.g. us.{})",
                    m.id, m.id
                ));
            }
            for a in &self.apps {
                if a.max_tokens > spec.max_output_tokens {
                    return bad(format!(
                        "app {}: max_tokens {} over the output limit of {} ({})",
                        a.name, a.max_tokens, m.id, spec.max_output_tokens
                    ));
                }
                if a.input_tokens > spec.context_window {
                    return bad(format!(
                        "app {}: input_tokens {} over the context window of {} ({})",
                        a.name, a.input_tokens, m.id, spec.context_window
                    ));
                }
            }
        }
        if self.total_calls() > 50_000 {
            return bad("more than 50,000 calls: too long for one run".into());
        }
        for f in &self.faults {
            if !(0.0..=1.0).contains(&f.rate) {
                return bad(format!("fault {}: rate must be 0..=1", f.kind));
            }
            self.fault_rule(f)?;
        }
        self.emulator_config().map(|_| ())
    }

    /// Wall time of one scenario minute.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }

    /// Wall seconds per scenario second.
    pub fn time_scale(&self) -> f64 {
        self.window().as_secs_f64() / 60.0
    }

    /// Requests per minute of `app` in `minute`.
    pub fn rate(&self, app: &AppSpec, minute: usize) -> f64 {
        app.rpm[minute.min(app.rpm.len() - 1)]
    }

    /// Calls of the whole run.
    pub fn total_calls(&self) -> u64 {
        self.apps
            .iter()
            .map(|a| {
                (0..self.minutes)
                    .map(|m| self.rate(a, m).round() as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    /// The same scenario with every quota multiplied by `factor`.
    pub fn with_quota_factor(&self, factor: f64) -> Scenario {
        let mut s = self.clone();
        for m in &mut s.models {
            m.tpm = ((m.tpm as f64) * factor).round().max(1.0) as u64;
            m.rpm = m.rpm.map(|r| ((r as f64) * factor).round().max(1.0) as u64);
        }
        s
    }

    /// The emulator's fault rule of `f` (no duration: the harness installs
    /// and removes it at minute boundaries).
    pub fn fault_rule(&self, f: &FaultSpec) -> Result<FaultRule, SpecError> {
        let mut spec = serde_json::json!({ "kind": f.kind });
        if let Some(n) = f.after_events {
            spec["after_events"] = n.into();
        }
        let kind: FaultKind = serde_json::from_value(spec).map_err(|e| SpecError::Invalid {
            scenario: self.name.clone(),
            reason: format!("fault kind {:?}: {e}", f.kind),
        })?;
        Ok(FaultRule::new(kind)
            .rate(f.rate)
            .model(f.model.clone().unwrap_or_else(|| self.models[0].id.clone())))
    }

    /// Faults active in `minute`.
    pub fn faults_in(&self, minute: usize) -> Vec<FaultRule> {
        self.faults
            .iter()
            .filter(|f| {
                minute >= f.from_minute && f.minutes.is_none_or(|n| minute < f.from_minute + n)
            })
            .filter_map(|f| self.fault_rule(f).ok())
            .collect()
    }

    /// The emulator's configuration: the models' quotas over a window of
    /// `window_ms`, the latencies scaled alike, any model id accepted.
    pub fn emulator_config(&self) -> Result<EmulatorConfig, SpecError> {
        let mut b = EmulatorConfig::builder()
            .seed(self.seed)
            .window(self.window())
            .allow_unknown_models(true)
            .output_tokens(self.output_tokens)
            .latency(Latency {
                time_to_first_token_ms: self.ttft_ms,
                per_token_ms: self.per_token_ms,
                scale: self.time_scale(),
            });
        for m in &self.models {
            let mut q = Quota::tokens(m.tpm);
            if let Some(r) = m.rpm {
                q = q.with_rpm(r);
            }
            b = b.quota(m.id.clone(), q);
        }
        b.build()
            .map_err(|e| SpecError::Emulator(self.name.clone(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_is_valid() {
        for name in Scenario::BUILT_IN {
            let s = Scenario::built_in(name).expect("built in");
            assert_eq!(s.name, name);
            s.validate().expect("valid");
        }
        assert!(Scenario::built_in("nope").is_none());
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../scenarios/example.toml");
        let s = Scenario::from_toml_str(text).expect("valid example");
        assert_eq!(s.apps.len(), 2);
        assert_eq!(s.faults_in(2).len(), 1);
        assert_eq!(s.faults_in(5).len(), 0);
        // A scenario written to TOML reads back the same.
        let back =
            Scenario::from_toml_str(&toml::to_string(&s).expect("serializes")).expect("valid");
        assert_eq!(back, s);
    }

    fn minimal() -> String {
        r#"
        name = "t"
        minutes = 2
        [[models]]
        id = "m"
        tpm = 1000
        [[apps]]
        name = "a"
        rpm = [10]
        "#
        .to_owned()
    }

    #[test]
    fn bad_files_fail_with_a_reason() {
        assert!(Scenario::from_toml_str(&minimal()).is_ok());
        let unknown_field = minimal().replace("minutes = 2", "minutes = 2\nminuets = 3");
        assert!(matches!(
            Scenario::from_toml_str(&unknown_field),
            Err(SpecError::Toml(_))
        ));
        let cases = [
            (minimal().replace("minutes = 2", "minutes = 0"), "minutes"),
            (minimal().replace("tpm = 1000", "tpm = 0"), "quotas"),
            (minimal().replace("rpm = [10]", "rpm = []"), "rpm"),
            (
                minimal().replace("rpm = [10]", "rpm = [10]\nprocess = 1"),
                "process",
            ),
            (
                minimal() + "[[faults]]\nkind = \"gremlins\"\n",
                "fault kind",
            ),
            (
                minimal() + "[[faults]]\nkind = \"unavailable\"\nrate = 2.0\n",
                "rate",
            ),
            (
                minimal().replace("name = \"t\"", "name = \"t\"\nfallback = \"m\""),
                "fallback",
            ),
            (minimal().replace("name = \"t\"", "name = \"a b\""), "name"),
            (
                minimal().replace(
                    "id = \"m\"",
                    "id = \"anthropic.claude-sonnet-4-20250514-v1:0\"",
                ),
                "inference profile",
            ),
            (
                minimal().replace(
                    "id = \"m\"",
                    "id = \"anthropic.claude-3-5-sonnet-20240620-v1:0\"",
                ) + "max_tokens = 5000\n",
                "output limit",
            ),
        ];
        for (text, word) in cases {
            match Scenario::from_toml_str(&text) {
                Err(SpecError::Invalid { reason, .. }) => {
                    assert!(reason.contains(word), "{reason:?} should mention {word}")
                }
                other => panic!("expected an invalid scenario ({word}), got {other:?}"),
            }
        }
    }

    #[test]
    fn in_stream_faults_say_after_how_many_events() {
        let s = Scenario::stream_faults();
        assert!(s.streaming);
        let rules = s.faults_in(2);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].kind, FaultKind::StreamThrottle { after_events: 0 });
        assert_eq!(
            s.faults_in(5)[0].kind,
            FaultKind::StreamUnavailable { after_events: 0 }
        );
        assert!(s.faults_in(4).is_empty());
        // An in-stream kind without `after_events` is refused with a reason.
        let text = minimal() + "[[faults]]\nkind = \"stream_throttle\"\n";
        match Scenario::from_toml_str(&text) {
            Err(SpecError::Invalid { reason, .. }) => {
                assert!(reason.contains("after_events"), "{reason}")
            }
            other => panic!("expected an invalid scenario, got {other:?}"),
        }
    }

    #[test]
    fn quota_factor_scales_every_model() {
        let s = Scenario::overload_fallback().with_quota_factor(0.5);
        assert_eq!(s.models[0].rpm, Some(75));
        assert_eq!(s.models[0].tpm, 100_000);
        assert_eq!(s.models[1].rpm, Some(100));
    }
}
