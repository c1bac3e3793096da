//! `EmfRecorder`: the stack's metrics as CloudWatch Embedded Metric Format.
//!
//! A [`metrics::Recorder`] that keeps what the layers emit (the names in
//! [`core::names`](crate::core::names)) and, on [`flush`](EmfRecorder::flush),
//! writes it as [Embedded Metric Format] documents, one JSON object per
//! line. Written to stdout (or any log stream that reaches CloudWatch Logs:
//! Lambda, ECS with `awslogs`, the CloudWatch agent), they become CloudWatch
//! metrics without a `PutMetricData` call:
//!
//! ```json
//! {"_aws":{"Timestamp":1764633600000,"CloudWatchMetrics":[{"Namespace":"TowerBedrock",
//!   "Dimensions":[["class","code","kind","model"]],
//!   "Metrics":[{"Name":"bedrock_invocation_errors_total","Unit":"Count"}]}]},
//!  "class":"unavailable","code":"ServiceUnavailableException","kind":"connection_pool",
//!  "model":"us.anthropic.claude-sonnet-4-20250514-v1:0","bedrock_invocation_errors_total":3}
//! ```
//!
//! - **Dimensions** are the metric's labels (and the
//!   [global dimensions](EmfRecorderBuilder::dimension), if any), so a metric
//!   is found in CloudWatch under the same name and labels as in Prometheus,
//!   e.g. `{TowerBedrock,class,code,kind,model}` for the error counter.
//!   Labels never carry request content, so neither do the documents: no
//!   prompt, no completion, no credential.
//! - **Counters** are written as the increase since the previous flush
//!   (left out when zero), **gauges** as their current value,
//!   **histograms** as `{"Values": [...], "Counts": [...]}` of the values
//!   recorded since the previous flush, rounded to three significant digits
//!   (at most 100 distinct values per document, as EMF requires; more go to
//!   further documents, so no sample is lost).
//! - Units follow the name: `_seconds` is `Seconds`, `_total` and `_tokens`
//!   are `Count`, anything else `None`.
//!
//! `monitoring/cloudwatch/bedrock-monitoring.yaml` reads these metrics
//! (namespace parameter `StackMetricsNamespace`, `TowerBedrock` by default):
//! the connection-pool alarm and the dashboard's "Stack" row.
//!
//! # Example
//!
//! ```
//! use tower_bedrock::emf::EmfRecorder;
//!
//! let recorder = EmfRecorder::builder("TowerBedrock").build().unwrap();
//! // In an application: metrics::set_global_recorder(recorder.clone()), then
//! // flush every minute or so (and once at shutdown) to stdout.
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::counter!("bedrock_invocations_total", "model" => "amazon.nova-lite-v1:0")
//!         .increment(2);
//!     metrics::histogram!("bedrock_invocation_latency_seconds", "model" => "amazon.nova-lite-v1:0", "outcome" => "ok")
//!         .record(0.25);
//! });
//! let mut out = Vec::new();
//! let written = recorder.flush_at(1_764_633_600_000, &mut out).unwrap();
//! assert_eq!(written, 2); // one document per label set
//! let text = String::from_utf8(out).unwrap();
//! let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
//! assert_eq!(first["_aws"]["CloudWatchMetrics"][0]["Namespace"], "TowerBedrock");
//! assert_eq!(first["model"], "amazon.nova-lite-v1:0");
//! assert_eq!(first["bedrock_invocations_total"], 2);
//! ```
//!
//! [Embedded Metric Format]: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use serde_json::{Map, Value, json};

/// Most dimensions EMF accepts in one dimension set.
pub const MAX_DIMENSIONS: usize = 30;
/// Most metrics, and most values of one metric, in one EMF document.
pub const MAX_PER_DOCUMENT: usize = 100;

/// A configuration [`EmfRecorderBuilder::build`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmfError {
    /// The namespace is empty, longer than 255 characters, or contains a
    /// character CloudWatch does not accept in namespaces.
    BadNamespace(String),
    /// More than [`MAX_DIMENSIONS`] global dimensions.
    TooManyDimensions(usize),
    /// A dimension or property name that is empty, starts with `_aws`, or
    /// is used twice.
    BadName(String),
}

impl std::fmt::Display for EmfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmfError::BadNamespace(ns) => write!(
                f,
                "CloudWatch namespace {ns:?}: 1 to 255 characters of letters, digits, '.', '-', '_', '/', '#', ':' or spaces"
            ),
            EmfError::TooManyDimensions(n) => write!(
                f,
                "{n} global dimensions: EMF allows {MAX_DIMENSIONS} per metric, labels included"
            ),
            EmfError::BadName(name) => write!(
                f,
                "dimension or property name {name:?}: empty, reserved (_aws) or given twice"
            ),
        }
    }
}

impl std::error::Error for EmfError {}

/// Configures an [`EmfRecorder`].
#[derive(Debug, Clone)]
pub struct EmfRecorderBuilder {
    namespace: String,
    dimensions: Vec<(String, String)>,
    properties: Vec<(String, String)>,
}

impl EmfRecorderBuilder {
    /// Adds a dimension to every metric (e.g. `("Service", "chat-gateway")`).
    /// It becomes part of every metric's identity in CloudWatch: queries
    /// and alarms (such as the shipped template's) must name it too.
    #[must_use]
    pub fn dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    /// Adds a property to every document: a field searchable with Logs
    /// Insights that is not a dimension (e.g. a host or a version).
    #[must_use]
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// Checks the configuration and builds the recorder.
    pub fn build(self) -> Result<EmfRecorder, EmfError> {
        let ns = &self.namespace;
        let ns_ok = !ns.is_empty()
            && ns.chars().count() <= 255
            && ns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c));
        if !ns_ok {
            return Err(EmfError::BadNamespace(self.namespace));
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(EmfError::TooManyDimensions(self.dimensions.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in self.dimensions.iter().chain(&self.properties) {
            if name.is_empty() || name.starts_with("_aws") || !seen.insert(name.as_str()) {
                return Err(EmfError::BadName(name.clone()));
            }
        }
        Ok(EmfRecorder {
            shared: Arc::new(Shared {
                namespace: self.namespace,
                dimensions: self.dimensions,
                properties: self.properties,
                metrics: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A [`metrics::Recorder`] that writes CloudWatch Embedded Metric Format
/// (see the [module docs](self)). Clones share their metrics.
#[derive(Debug, Clone)]
pub struct EmfRecorder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    namespace: String,
    dimensions: Vec<(String, String)>,
    properties: Vec<(String, String)>,
    metrics: Mutex<HashMap<Key, Stored>>,
}

#[derive(Debug, Clone)]
enum Stored {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Distribution>),
}

/// Values recorded since the last flush, rounded to three significant
/// digits, with their counts.
#[derive(Debug, Default)]
struct Distribution(Mutex<BTreeMap<u64, u64>>);

impl HistogramFn for Distribution {
    fn record(&self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let key = round3(value).to_bits();
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(0) += 1;
    }
}

/// `v` rounded to three significant digits.
fn round3(v: f64) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
    let r = (v * scale).round() / scale;
    if r.is_finite() { r } else { v }
}

fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "Seconds"
    } else if name.ends_with("_total") || name.ends_with("_tokens") {
        "Count"
    } else {
        "None"
    }
}

/// A metric's labels, sorted by name.
type Labels = Vec<(String, String)>;

/// One metric's data for one document.
enum Data {
    /// A counter's increase (an integer) or a gauge's value.
    Number(Value),
    /// A histogram's values and their counts.
    Values(Vec<(f64, u64)>),
}

impl EmfRecorder {
    /// Starts a recorder writing to the CloudWatch namespace `namespace`
    /// (the shipped CloudFormation template expects `TowerBedrock`).
    pub fn builder(namespace: impl Into<String>) -> EmfRecorderBuilder {
        EmfRecorderBuilder {
            namespace: namespace.into(),
            dimensions: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// Writes what was recorded since the previous flush as EMF documents,
    /// one per line, timestamped now; returns how many were written.
    pub fn flush(&self, out: &mut dyn Write) -> io::Result<usize> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.flush_at(now, out)
    }

    /// [`flush`](Self::flush) with the documents' timestamp given
    /// (milliseconds since the UNIX epoch).
    pub fn flush_at(&self, timestamp_ms: u64, out: &mut dyn Write) -> io::Result<usize> {
        // Take the data first, then write without holding the lock.
        let mut groups: BTreeMap<Labels, Vec<(String, Data)>> = BTreeMap::new();
        {
            let metrics = self
                .shared
                .metrics
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (key, stored) in metrics.iter() {
                let data = match stored {
                    Stored::Counter(c) => match c.swap(0, Ordering::Relaxed) {
                        0 => continue,
                        n => Data::Number(json!(n)),
                    },
                    Stored::Gauge(g) => match f64::from_bits(g.load(Ordering::Relaxed)) {
                        v if v.is_finite() => Data::Number(json!(v)),
                        _ => continue,
                    },
                    Stored::Histogram(h) => {
                        let taken = std::mem::take(
                            &mut *h.0.lock().unwrap_or_else(PoisonError::into_inner),
                        );
                        if taken.is_empty() {
                            continue;
                        }
                        Data::Values(
                            taken
                                .into_iter()
                                .map(|(bits, n)| (f64::from_bits(bits), n))
                                .collect(),
                        )
                    }
                };
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                labels.dedup_by(|a, b| a.0 == b.0);
                groups
                    .entry(labels)
                    .or_default()
                    .push((key.name().to_owned(), data));
            }
        }
        let mut written = 0;
        for (labels, mut metrics) in groups {
            metrics.sort_by(|a, b| a.0.cmp(&b.0));
            for doc in self.documents(timestamp_ms, &labels, metrics) {
                serde_json::to_writer(&mut *out, &doc)?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
        out.flush()?;
        Ok(written)
    }

    /// Flushes to `out` every `every` on a thread of its own (no async
    /// runtime needed), until the returned [`Flusher`] is stopped or
    /// dropped, which flushes once more: nothing recorded before is lost at
    /// shutdown. A failed write is reported as a `warn` event (what that
    /// flush held is lost) and the next flush goes on.
    pub fn spawn_flusher<W>(&self, every: Duration, out: W) -> io::Result<Flusher<W>>
    where
        W: Write + Send + 'static,
    {
        let recorder = self.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let every = every.max(Duration::from_millis(1));
        let thread = std::thread::Builder::new()
            .name("tower-bedrock-emf".into())
            .spawn(move || {
                let mut out = out;
                let mut next = Instant::now() + every;
                while !stopping.load(Ordering::Acquire) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    next = now + every;
                    if let Err(e) = recorder.flush(&mut out) {
                        tracing::warn!(error = %e, "EMF flush failed");
                    }
                }
                if let Err(e) = recorder.flush(&mut out) {
                    tracing::warn!(error = %e, "final EMF flush failed");
                }
                out
            })?;
        Ok(Flusher {
            stop,
            thread: Some(thread),
        })
    }

    /// The documents of one label set: numbers and the first 100 values of
    /// each histogram together (100 metrics per document at most), further
    /// histogram values in documents of their own.
    fn documents(
        &self,
        timestamp_ms: u64,
        labels: &[(String, String)],
        metrics: Vec<(String, Data)>,
    ) -> Vec<Value> {
        let mut base = Map::new();
        for (k, v) in &self.shared.properties {
            base.insert(k.clone(), Value::String(v.clone()));
        }
        let mut dims: Vec<String> = Vec::new();
        for (k, v) in self.shared.dimensions.iter().chain(labels) {
            if !dims.contains(k) {
                dims.push(k.clone());
            }
            // A label overrides a global dimension or property of its name.
            base.insert(k.clone(), Value::String(v.clone()));
        }
        dims.truncate(MAX_DIMENSIONS);

        // Pages of (name, value) pairs; each page becomes one document.
        let mut pages: Vec<Vec<(String, Value)>> = vec![Vec::new()];
        let mut overflow: Vec<(String, Value)> = Vec::new();
        for (name, data) in metrics {
            let value = match data {
                Data::Number(n) => n,
                Data::Values(values) => {
                    let mut chunks = values.chunks(MAX_PER_DOCUMENT);
                    let first = chunks.next().map(values_json).unwrap_or(Value::Null);
                    overflow.extend(chunks.map(|c| (name.clone(), values_json(c))));
                    first
                }
            };
            if pages.last().is_some_and(|p| p.len() >= MAX_PER_DOCUMENT) {
                pages.push(Vec::new());
            }
            if let Some(page) = pages.last_mut() {
                page.push((name, value));
            }
        }
        pages.extend(overflow.into_iter().map(|m| vec![m]));

        pages
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|page| {
                let mut doc = base.clone();
                let definitions: Vec<Value> = page
                    .iter()
                    .map(|(name, _)| json!({ "Name": name, "Unit": unit_of(name) }))
                    .collect();
                for (name, value) in page {
                    doc.insert(name, value);
                }
                doc.insert(
                    "_aws".to_owned(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": self.shared.namespace,
                            "Dimensions": [dims],
                            "Metrics": definitions,
                        }],
                    }),
                );
                Value::Object(doc)
            })
            .collect()
    }

    fn stored(&self, key: &Key, make: impl FnOnce() -> Stored) -> Stored {
        self.shared
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(make)
            .clone()
    }
}

/// The periodic flush of [`EmfRecorder::spawn_flusher`]. Stopping it (or
/// dropping it) flushes a last time and ends its thread.
#[derive(Debug)]
pub struct Flusher<W> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<W>>,
}

impl<W> Flusher<W> {
    /// Flushes a last time, ends the thread and gives the writer back
    /// (`None` if the thread panicked).
    pub fn stop(mut self) -> Option<W> {
        self.finish()
    }

    fn finish(&mut self) -> Option<W> {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.take()?;
        thread.thread().unpark();
        thread.join().ok()
    }
}

impl<W> Drop for Flusher<W> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn values_json(values: &[(f64, u64)]) -> Value {
    json!({
        "Values": values.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        "Counts": values.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
    })
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.stored(key, || Stored::Counter(Arc::default())) {
            Stored::Counter(c) => Counter::from_arc(c),
            // The same key registered as another kind: not recorded.
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.stored(key, || Stored::Gauge(Arc::default())) {
            Stored::Gauge(g) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.stored(key, || Stored::Histogram(Arc::default())) {
            Stored::Histogram(h) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(recorder: &EmfRecorder) -> Vec<Value> {
        let mut out = Vec::new();
        recorder.flush_at(1_000, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn counters_are_deltas_gauges_current_histograms_drained() {
        let r = EmfRecorder::builder("Test").build().unwrap();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("a_total", "model" => "m").increment(3);
            metrics::gauge!("g_ratio", "model" => "m").set(0.5);
            metrics::histogram!("h_seconds", "model" => "m").record(0.12345);
            metrics::histogram!("h_seconds", "model" => "m").record(0.1234);
            metrics::histogram!("h_seconds", "model" => "m").record(2.0);
        });
        let docs = lines(&r);
        assert_eq!(docs.len(), 1, "{docs:?}");
        let d = &docs[0];
        assert_eq!(d["a_total"], 3.0);
        assert_eq!(d["g_ratio"], 0.5);
        // 0.12345 and 0.1234 both round to 0.123.
        assert_eq!(d["h_seconds"]["Values"], json!([0.123, 2.0]));
        assert_eq!(d["h_seconds"]["Counts"], json!([2, 1]));
        let cw = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Test");
        assert_eq!(cw["Dimensions"], json!([["model"]]));
        assert_eq!(
            cw["Metrics"],
            json!([
                {"Name": "a_total", "Unit": "Count"},
                {"Name": "g_ratio", "Unit": "None"},
                {"Name": "h_seconds", "Unit": "Seconds"},
            ])
        );
        assert_eq!(d["_aws"]["Timestamp"], 1_000);

        // Nothing new: only the gauge is written again.
        let docs = lines(&r);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["g_ratio"], 0.5);
        assert!(docs[0].get("a_total").is_none() && docs[0].get("h_seconds").is_none());
    }

    #[test]
    fn label_sets_are_documents_and_dimensions() {
        let r = EmfRecorder::builder("Test")
            .dimension("Service", "gw")
            .property("version", "1.2")
            .build()
            .unwrap();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("e_total", "model" => "m", "class" => "throttled").increment(1);
            metrics::counter!("e_total", "model" => "n", "class" => "throttled").increment(1);
            metrics::counter!("r_total").increment(1);
        });
        let docs = lines(&r);
        assert_eq!(docs.len(), 3);
        for d in &docs {
            assert_eq!(d["Service"], "gw");
            assert_eq!(d["version"], "1.2");
            let dims = &d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
            assert_eq!(dims[0], "Service");
            assert!(!dims.as_array().unwrap().contains(&json!("version")));
        }
        let models: Vec<&Value> = docs.iter().map(|d| &d["model"]).collect();
        assert!(models.contains(&&json!("m")) && models.contains(&&json!("n")));
        let labelled = docs.iter().find(|d| d["model"] == "m").unwrap();
        assert_eq!(
            labelled["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Service", "class", "model"]])
        );
    }

    #[test]
    fn more_than_100_values_spill_into_further_documents() {
        let r = EmfRecorder::builder("Test").build().unwrap();
        metrics::with_local_recorder(&r, || {
            for i in 1..=250 {
                metrics::histogram!("h_seconds").record(f64::from(i));
            }
            metrics::histogram!("h_seconds").record(f64::NAN);
        });
        let docs = lines(&r);
        assert_eq!(docs.len(), 3);
        let mut total = 0;
        for d in &docs {
            let values = d["h_seconds"]["Values"].as_array().unwrap();
            assert!(values.len() <= MAX_PER_DOCUMENT);
            let counts: u64 = d["h_seconds"]["Counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .sum();
            total += counts;
        }
        assert_eq!(total, 250, "every finite sample kept, NaN dropped");
    }

    /// A writer the test can read after the flusher thread wrote to it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_flusher_flushes_once_more_when_stopped() {
        let r = EmfRecorder::builder("Test").build().unwrap();
        let out = Shared::default();
        // An interval no test run reaches: only the final flush writes.
        let flusher = r
            .spawn_flusher(Duration::from_secs(3_600), out.clone())
            .unwrap();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("a_total", "model" => "m").increment(5);
        });
        assert!(out.0.lock().unwrap().is_empty());
        assert!(flusher.stop().is_some());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let doc: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(doc["a_total"], 5);

        // Dropping works the same way.
        let out = Shared::default();
        let flusher = r
            .spawn_flusher(Duration::from_secs(3_600), out.clone())
            .unwrap();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("a_total", "model" => "m").increment(2);
        });
        drop(flusher);
        assert!(
            String::from_utf8(out.0.lock().unwrap().clone())
                .unwrap()
                .contains(r#""a_total":2"#)
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            EmfRecorder::builder("").build().unwrap_err(),
            EmfError::BadNamespace(String::new())
        );
        assert!(matches!(
            EmfRecorder::builder("a{b}").build(),
            Err(EmfError::BadNamespace(_))
        ));
        assert_eq!(
            EmfRecorder::builder("Ns")
                .dimension("x", "1")
                .property("x", "2")
                .build()
                .unwrap_err(),
            EmfError::BadName("x".into())
        );
        assert!(matches!(
            EmfRecorder::builder("Ns").property("_aws", "1").build(),
            Err(EmfError::BadName(_))
        ));
        let many = (0..31).fold(EmfRecorder::builder("Ns"), |b, i| {
            b.dimension(format!("d{i}"), "v")
        });
        assert_eq!(many.build().unwrap_err(), EmfError::TooManyDimensions(31));
    }

    #[test]
    fn round3_keeps_three_significant_digits() {
        assert_eq!(round3(0.0), 0.0);
        assert_eq!(round3(123_456.0), 123_000.0);
        assert_eq!(round3(0.000_987_65), 0.000_988);
        assert_eq!(round3(-1.2345), -1.23);
    }
}
